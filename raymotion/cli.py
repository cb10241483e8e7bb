"""The ``raymotion`` command: parse arguments, build the config, make one call.

    raymotion doctor [--render] [--config run.yaml] [--set body.model=anny_lowres ...]
    raymotion config [--config run.yaml] [--set ...]     # print the resolved config as YAML
    raymotion config --describe                          # every key, its type, default and meaning
    raymotion synth [--preset tiny|default|large] [--preview] [--report] [--set synth.num_workers=2 ...]
    raymotion pretrain --set train.fraction=0.05 --set run.name=pre5 [--resume]  # supervised, on a fraction
    raymotion refine --set train.pretrained=runs/pre5/checkpoint.pt --set run.name=ref5
    raymotion evaluate --checkpoint runs/ref5/checkpoint.pt [--split test]  # or --checkpoint mean
    raymotion predict --checkpoint runs/ref5/checkpoint.pt video.mp4 --out pred/ [--boxes tracks.csv] [--side-view]
    raymotion import spin-npz coco_2014_train.npz --images data/coco --out data/real  # or 3dpw, humandata, boxes
    raymotion mean-params --out mean_params.npz                            # regressor start point
    raymotion smpl-to-npz body_models/smpl/SMPL_NEUTRAL.pkl --out body_models/smpl/SMPL_NEUTRAL.npz
    raymotion diagnose-flow [--max-clips 8]      # the flow loss at the true meshes vs static/jitter
    raymotion precompute-flow [--set train.video_clips=24]  # the pair store of data.video_source=precomputed

The data pipeline's benchmark (Ray Data against a plain loop) is not a command of the library:
``python benchmarks/bench_data.py`` (same config flags).

Errors in the config or the input (raymotion.errors.USER_ERRORS, also raised inside Ray) end any command with
one message on stderr and exit code 2; ``-v`` adds the traceback. Other errors keep their traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from raymotion.config import SYNTH_PRESETS, Config, describe, load_config, to_dict
from raymotion.errors import report_user_error
from raymotion.importers import IMPORT_FORMATS


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of config overrides (nested or dotted keys)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set body.model=anny_lowres (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raymotion", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    doctor = sub.add_parser("doctor", help="check the installation, body models, CUDA, DALI, rendering and Ray")
    doctor.add_argument(
        "--render", action="store_true", help="also render the body in a walking pose to render.output (PNG)"
    )
    _add_config_args(doctor)

    config = sub.add_parser("config", help="print the resolved config, or describe every key")
    config.add_argument("--describe", action="store_true", help="list every key with type, default and help")
    _add_config_args(config)

    synth = sub.add_parser("synth", help="render the synthetic motion-video benchmark (skips finished clips)")
    synth.add_argument("--preset", choices=sorted(SYNTH_PRESETS), default="default",
                       help="benchmark size: tiny (tests, seconds), default (the main job), large (clusters)")
    synth.add_argument("--preview", action="store_true", help="also write <out_dir>/preview.png, a contact sheet")
    synth.add_argument("--report", action="store_true",
                       help="also score the flow estimator against the exact flow, per split")
    _add_config_args(synth)

    for name, text in (("pretrain", "supervised pretraining on train.fraction of the labelled pool"),
                       ("refine", "flow-consistency refinement of train.pretrained on unannotated video")):
        stage = sub.add_parser(name, help=text + " (the Ray Train loop in local mode: this process)")
        stage.add_argument("--resume", action="store_true", help="continue the run folder's checkpoint")
        _add_config_args(stage)
    evaluate = sub.add_parser("evaluate", help="score a checkpoint on the val or test split (the model and data.* "
                              "come from the checkpoint's own config; --set may change what does not define the model)")
    evaluate.add_argument("--checkpoint", required=True,
                          help="a run's checkpoint.pt, or 'mean' for the constant mean-pose baseline")
    evaluate.add_argument("--split", choices=("val", "test"), default="test")
    _add_config_args(evaluate)
    predict = sub.add_parser("predict", help="run a checkpoint on an image, a folder of images, a video or a clip "
                             "folder: predictions.npz, mesh overlays (predict.* keys; the model comes from the "
                             "checkpoint's own config)")
    predict.add_argument("input", help="an image, a folder of images (any sizes), a video, or a clip folder of "
                         "raymotion's data format (its labels' boxes are used)")
    predict.add_argument("--checkpoint", required=True, help="a run's checkpoint.pt (or a shipped base model)")
    predict.add_argument("--out", required=True, help="output folder: predictions.npz, overlay.mp4 or overlay/, "
                         "summary.json")
    predict.add_argument("--boxes", help="person boxes: .csv (frame,track,x0,y0,x1,y1[,score]), .json, or a PHALP / "
                         "VIBE tracker pickle (raymotion/data/boxes.py); default: the clip's labels, else the whole frame")
    for flag, key, text in (("--side-view", "predict.side_view", "add a side view to the overlay"),
                            ("--no-overlay", "predict.overlay", "skip the overlay (predictions only)"),
                            ("--vertices", "predict.save_vertices", "store every mesh's vertices in predictions.npz"),
                            ("--obj", "predict.save_obj", "write one .obj per frame and track")):
        predict.add_argument(flag, dest=key, action="store_true", help=f"{text} (= --set {key}="
                             f"{'false' if flag.startswith('--no-') else 'true'})")
    predict.add_argument("--smooth", choices=("none", "gaussian"), default=None,
                         help="temporal smoothing of a video's exported parameters (= --set predict.smoothing=...)")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_args(predict)
    importer = sub.add_parser("import", help="bring a dataset in the field's format (SPIN npz, 3DPW, HumanData) or "
                              "a video with a tracker's boxes into raymotion's data format (docs/importing.md)")
    importer.add_argument("format", choices=IMPORT_FORMATS, help="the source's format")
    importer.add_argument("source", help="spin-npz / humandata: the .npz; 3dpw: the dataset root, a "
                          "sequenceFiles/<split> folder or one sequence .pkl; boxes: a video or a folder of frames")
    importer.add_argument("--out", required=True, help="the raymotion data folder to write (imports add up)")
    importer.add_argument("--images", help="spin-npz / humandata: the folder the file's image paths are relative to "
                          "(default: the file's folder)")
    importer.add_argument("--boxes", help="boxes: the person boxes, .csv (frame,track,x0,y0,x1,y1[,score]), .json, "
                          "or a PHALP / VIBE tracker pickle")
    importer.add_argument("--split", choices=("labelled", "video", "val", "test"),
                          help="the split the clips go to (default: labelled; 3dpw: from its folder; boxes: video)")
    importer.add_argument("--copy", action="store_true", help="copy the frames into the data folder (default: "
                          "listed by path where they are)")
    importer.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_args(importer)
    mean = sub.add_parser("mean-params", help="mean pose/shape/camera of the labelled pool (regressor start)")
    mean.add_argument("--out", required=True, help="the .npz to write")
    _add_config_args(mean)
    convert = sub.add_parser("smpl-to-npz", help="convert a trusted SMPL .pkl once into an .npz that loads "
                             "without unpickling (put it beside the .pkl: the .npz is then used)")
    convert.add_argument("source", help="an SMPL .pkl (numpy, scipy.sparse and chumpy arrays only are read)")
    convert.add_argument("--out", required=True, help="the .npz to write, e.g. body_models/smpl/SMPL_NEUTRAL.npz")
    gate = sub.add_parser("diagnose-flow", help="does the flow loss carry signal? (truth vs static meshes)")
    gate.add_argument("--max-clips", type=int, default=8, help="video clips to use (their labels are read)")
    _add_config_args(gate)
    store = sub.add_parser("precompute-flow", help="write the refinement's frame pairs with flow once, as the "
                           "Parquet pair store that data.video_source=precomputed reads (skips a finished one)")
    _add_config_args(store)
    for command in sub.choices.values():
        command.add_argument("-v", "--verbose", action="store_true",
                             help="with an error, print its traceback too (errors in the config or the input are "
                             "otherwise one message and exit code 2)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except Exception as err:
        # Bad config or input (raymotion's errors, also from inside Ray): the message, last, and exit 2.
        if not report_user_error(f"raymotion {args.command}", err, verbose=args.verbose):
            raise
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "smpl-to-npz":
        from pathlib import Path

        from raymotion.body.body_model import smpl_pkl_to_npz

        try:
            arrays = smpl_pkl_to_npz(Path(args.source), Path(args.out))
        except ModuleNotFoundError as err:  # chumpy missing: the message says what to install
            print(f"raymotion smpl-to-npz: {err}", file=sys.stderr)
            return 2
        print(f"wrote {args.out}: {', '.join(sorted(arrays))}")
        return 0
    if args.command == "predict":
        from raymotion.predict.run import Predictor, predict_to_folder

        flags = [f"{key}={'false' if key == 'predict.overlay' else 'true'}"
                 for key in ("predict.side_view", "predict.overlay", "predict.save_vertices", "predict.save_obj")
                 if getattr(args, key)]
        flags += [f"predict.smoothing={args.smooth}"] if args.smooth else []
        predictor = Predictor.from_checkpoint(args.checkpoint, config_path=args.config,
                                              overrides=[*flags, *args.overrides])
        summary = predict_to_folder(predictor, args.input, args.out, boxes_path=args.boxes,
                                    progress=not args.no_progress)
        print(summary.format())
        return 0
    if args.command == "evaluate":  # the model and its data come from the checkpoint's own config
        from raymotion.train.components import evaluate_checkpoint, evaluation_config

        cfg = evaluation_config(args.checkpoint, config_path=args.config, overrides=args.overrides)
        print(json.dumps(evaluate_checkpoint(cfg, args.checkpoint, split=args.split), indent=2))
        return 0
    preset = SYNTH_PRESETS[args.preset] if args.command == "synth" else None
    cfg = load_config(args.config, args.overrides, preset=preset)
    if args.command == "doctor":
        from raymotion.doctor import run_doctor

        return run_doctor(cfg, render=args.render)
    if args.command == "config":
        print(describe(Config) if args.describe else yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    if args.command == "synth":
        from raymotion.synth.generate import generate

        print(f"manifest: {generate(cfg)}")
        if args.preview:
            from raymotion.synth.inspection import contact_sheet

            print(f"preview: {contact_sheet(cfg)}")
        if args.report:
            from raymotion.synth.inspection import flow_report, format_flow_report

            print(format_flow_report(flow_report(cfg), estimator=cfg.flow.estimator, crop_size=cfg.data.crop_size))
        return 0
    if args.command in ("pretrain", "refine"):
        from raymotion.eval.evaluate import METRIC_KEYS
        from raymotion.train.launch import run_training

        metrics = run_training(cfg, args.command, resume=args.resume, local=True)
        print(json.dumps({k: metrics[k] for k in METRIC_KEYS}, indent=2))
        return 0
    if args.command == "import":
        from raymotion.importers import run_import

        summary = run_import(args.format, args.source, out_dir=args.out, cfg=cfg.importer, body_cfg=cfg.body,
                             images=args.images, boxes=args.boxes, split=args.split, copy_frames=args.copy,
                             progress=not args.no_progress)
        print(summary.format())
        return 0
    if args.command == "mean-params":
        from raymotion.body.body_model import load_body_model
        from raymotion.data.labels import mean_param_targets
        from raymotion.models.mean_params import fit_mean_params

        params = fit_mean_params(**mean_param_targets(cfg.data.root, bbox_scale=cfg.data.bbox_scale),
                                 body_model=load_body_model(cfg.body))
        params.to_npz(args.out)
        print(f"wrote {args.out}: cam {params.cam_3.tolist()}, mean |beta| {params.betas_K.abs().mean():.3f}")
        return 0
    if args.command == "diagnose-flow":
        from raymotion.eval.flow_gate import run_flow_gate

        print(run_flow_gate(cfg, max_clips=args.max_clips))
        return 0
    if args.command == "precompute-flow":
        from raymotion.data.flow_store import precompute_for_config
        from raymotion.train.launch import absolute_paths, init_ray

        cfg = absolute_paths(cfg)
        init_ray(cfg)
        try:
            store = precompute_for_config(cfg)  # a bad clip's error comes out of Ray Data: main() prints its cause
        except OSError as err:  # an unreachable bucket (the message says what to check)
            print(f"raymotion precompute-flow: {err}", file=sys.stderr)
            return 2
        how = "already there, reused" if store.reused else "written"
        print(f"pair store {store.folder}: {store.rows} pairs, {how} ({store.seconds:.1f} s to compute)")
        return 0
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
