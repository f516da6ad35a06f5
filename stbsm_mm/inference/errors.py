"""The error that ``stbsm-infer`` raises for input it cannot process."""


class InferenceError(ValueError):
    """A slice, ROI, model or option cannot be processed as the model needs.

    The message names the value that failed and what to pass instead.
    """
