"""Score a checkpoint (or the constant mean pose) on the val or test split; prints the metrics as JSON.

    python jobs/evaluate.py --checkpoint runs/embedded-default/checkpoint.pt --split test
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _args  # noqa: E402

from raymotion.train.components import evaluate_checkpoint, evaluation_config  # noqa: E402

if __name__ == "__main__":
    parser = _args.parser(__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a run's checkpoint.pt, or 'mean'")
    parser.add_argument("--split", choices=("val", "test"), default="test")
    args = parser.parse_args()

    def score() -> dict[str, float]:
        cfg = evaluation_config(args.checkpoint, config_path=args.config, overrides=args.overrides)
        return evaluate_checkpoint(cfg, args.checkpoint, split=args.split)

    metrics = _args.run(args, score)
    print(json.dumps(metrics, indent=2))
