"""The one exception type for user-facing failures (bad input, bad configuration), and the check of a `--device`."""


class PruneError(Exception):
    """A problem with the user's input. Its message is one line that names the problem and the fix;
    the command-line tools print it and exit with status 2."""


def require_device(device: str) -> None:
    """PruneError unless ``device`` (a ``--device`` value) is ``cpu`` or a ``cuda`` that torch sees."""
    if device not in ("cpu", "cuda"):
        raise PruneError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise PruneError("--device cuda: no CUDA device visible to torch; use --device cpu")
