"""Two roots: errors the user caused (bad input, unsupported model) and the tool's own bugs.

Only the command line turns these into messages and exit codes; the library raises them.
"""


class RnnexportError(Exception):
    """Base of every error rnnexport raises on purpose."""


class UserError(RnnexportError):
    """The input or the request cannot be served; the message says what to change.

    `cli_message` says it in the command line's terms where they differ (`--force` for
    `force=True`)."""

    def __init__(self, message: str, cli_message: str = "") -> None:
        super().__init__(message)
        self.cli_message = cli_message or message


class ConfigError(UserError):
    """The config file says something rnnexport cannot use; the message names the file and the key."""


class SourceError(UserError):
    """A source file is missing, unreadable or not a model rnnexport understands."""


class UnsupportedModelError(UserError):
    """The model loads, but holds something rnnexport cannot export faithfully."""


class OutputExistsError(UserError):
    """An export would overwrite an existing file or directory."""

    def __init__(self, path: object) -> None:
        super().__init__(f"{path}: already exists; pass force=True to overwrite",
                         f"{path}: already exists; pass --force to overwrite")
        self.path = path


class OutputBusyError(UserError):
    """Another run is writing to the same output directory."""


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


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal (SIGINT, SIGTERM) before it finished. `completed` lists the
    exports installed in full before it; nothing else was left under their names."""

    def __init__(self, signum: int = 2, completed: tuple[object, ...] = ()) -> None:
        super().__init__(signum)
        self.signum = signum
        self.completed = completed


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

