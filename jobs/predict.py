"""Batch inference: a checkpoint run over a folder or manifest of many videos on Ray Data, resumable.

    python jobs/predict.py --checkpoint runs/ref5/checkpoint.pt videos/ --out predictions/
    python jobs/predict.py --checkpoint ck.pt data/synth/default/manifest.parquet --split test --out pred/ \
        --set predict.actors=4 --set predict.overlay=false
    ray job submit --working-dir . -- python jobs/predict.py --checkpoint /shared/ck.pt /shared/videos --out /shared/pred

Each video gets <out>/<name>/ (predictions.npz, overlay.mp4, summary.json, as `raymotion predict` writes them);
a rerun skips the videos whose summary.json exists. Settings: predict.* (predict.actors, predict.actor_gpus,
predict.actor_threads, predict.overlay, ...) with --set; the model comes from the checkpoint.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # jobs/_args.py, also under `ray job submit`

import _args  # noqa: E402


def main(args: argparse.Namespace) -> None:
    from raymotion.predict.pipeline import list_videos, predict_videos, todo
    from raymotion.predict.run import predict_config
    from raymotion.train.launch import absolute_paths, init_ray

    cfg, _ = predict_config(args.checkpoint, config_path=args.config, overrides=args.overrides)
    cfg = absolute_paths(cfg)
    videos = list_videos(args.videos, split=args.split)
    if todo(videos, args.out)[0]:  # nothing left to do: no Ray to start
        init_ray(cfg)
    print(predict_videos(cfg, checkpoint=args.checkpoint, videos=videos, out_dir=args.out).format(args.out))


if __name__ == "__main__":
    parser = _args.parser(__doc__.splitlines()[0], config_args=False)
    parser.add_argument("videos", help="a folder of videos (boxes beside them: <stem>.csv/.json/.pkl), a raymotion "
                        "manifest.parquet (boxes from the labels) or a CSV with columns video[,boxes]")
    parser.add_argument("--checkpoint", required=True, help="a run's checkpoint.pt (or a shipped base model)")
    parser.add_argument("--out", required=True, help="output folder: one sub-folder per video")
    parser.add_argument("--split", default="", help="with a manifest.parquet: only this split's clips")
    parser.add_argument("--config", help="YAML of predict.* (and run.*, data.bad_input) overrides")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set predict.actors=4 (repeatable)")
    arguments = parser.parse_args()
    _args.run(arguments, lambda: main(arguments))
