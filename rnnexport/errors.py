"""Two roots: errors the user caused (bad input, unsupported model) and the tool's own bugs.

Only the command line turns these into messages and exit codes; the library raises them.
"""


class RnnexportError(Exception):
    """Base of every error rnnexport raises on purpose."""


class UserError(RnnexportError):
    """The input or the request cannot be served; the message says what to change."""


class SourceError(UserError):
    """A source file is missing, unreadable or not a model rnnexport understands."""


class UnsupportedModelError(UserError):
    """The model loads, but holds something rnnexport cannot export faithfully."""


class OutputExistsError(UserError):
    """An export would overwrite an existing file or directory."""


class ExportError(UserError):
    """An export cannot be written, or cannot be read back. `log` keeps a converter's full
    output for `--debug`."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


class NotRunnableError(ExportError):
    """A valid export that the runtime installed here cannot run (for example Flex ops)."""


class DeviceError(UserError):
    """The requested device is not available."""


class PluginError(UserError):
    """No plugin matches the request, or the plugin that matches failed to load."""


class InternalError(RnnexportError):
    """A bug in rnnexport itself: please report it with the `--debug` output."""


def one_line(exc: BaseException, typed: bool = True) -> str:
    """An exception as one line for a message: `Type: first line` (`typed=False`: the first line
    alone). An empty message gives the type's name, never an empty string.

    >>> one_line(ValueError("bad shape\nat node 3"))
    'ValueError: bad shape'
    """
    lines = str(exc).strip().splitlines()
    first = lines[0].strip() if lines else ""
    if not first:
        return type(exc).__name__
    return f"{type(exc).__name__}: {first}" if typed else first

