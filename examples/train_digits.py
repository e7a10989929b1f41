"""Train the digits classifier from a LightningCLI config, with eqmonitor's callbacks set in YAML.

python examples/train_digits.py fit --config configs/digits_monitor.yaml
tensorboard --logdir lightning_logs      # equivariance/<name>/... scalars and NERO images
"""

from lightning.pytorch.cli import LightningCLI

from eqmonitor.demos import DigitsClassifier, DigitsDataModule


def main(args=None) -> LightningCLI:
    return LightningCLI(DigitsClassifier, DigitsDataModule, args=args)


if __name__ == "__main__":
    main()
