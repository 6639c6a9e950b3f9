"""The one error of transfer learning."""


class TransferError(ValueError):
    """Pretrained weights that cannot be used as configured; one line naming the key, the
    parameter or the file."""
