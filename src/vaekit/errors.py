"""Exceptions that carry a message meant for the user (the CLI prints them and exits non-zero)."""


class VaekitError(Exception):
    """Base class: something the user can fix (bad input, missing data, wrong checkpoint)."""


class DataError(VaekitError, ValueError):
    """A data file or folder is missing, corrupt, or of a shape the model cannot use."""


class DataNote(UserWarning):
    """Something the reader did to the data that the user should know (a dropped alpha
    channel, skipped files); the command line prints it as one line."""


class CheckpointError(VaekitError):
    """A checkpoint is missing, damaged, or belongs to another model."""


class TrainingDiverged(VaekitError):
    """The loss or a gradient became NaN or infinite; the last good checkpoint is kept."""


class CodingError(VaekitError):
    """Input that this model cannot code, or a stream that does not decode."""
