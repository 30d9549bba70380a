"""`gpt2-owt train`: train GPT-2 with Accelerate (single GPU, DDP, DeepSpeed ZeRO-1/2/3, multi-node) from one YAML
config.

    accelerate launch [--config_file accelerate_configs/X.yaml] -m gpt2_owt.cli train \
        --config training/configs/gpt2-124m-owt.yaml [--field value ...]

The flags (training/config.py) are parsed and checked before the Trainer (training/trainer.py) and with it torch,
transformers and accelerate are imported: `--help` and a bad flag answer at once.
"""

from gpt2_owt.core.args import command_argv
from gpt2_owt.core.errors import cli_main
from gpt2_owt.training.config import parse_config


@cli_main
def main(argv: list[str] | None = None) -> int:
    argv = command_argv(argv)
    cfg = parse_config(argv)
    from gpt2_owt.training.trainer import Trainer, resolved  # torch and the HF stack: ~2 s, only for a valid command

    with Trainer(resolved(cfg), argv) as trainer:
        code = trainer.run()
    if code:
        raise SystemExit(code)
    return 0


if __name__ == "__main__":
    main()
