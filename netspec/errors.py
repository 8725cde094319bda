"""The one exception type netspec raises for bad input.

Caffe aborts with `Check failed: ...`; netspec raises NetspecError with a single line that names the
file (with line:column for prototxt), the layer or record, what was expected and what was found.
The CLI prints that line without a traceback (`--debug` shows it).
"""


class NetspecError(Exception):
    """A user-facing error whose message is one complete line."""

    def __init__(self, message: str, *, file=None, line=None, column=None, layer=None):
        self.file, self.line, self.column, self.layer = file, line, column, layer
        self.message = " ".join(str(message).split("\n"))
        where = ""
        if file is not None:
            where = str(file)
            if line is not None:
                where += f":{line}" + (f":{column}" if column is not None else "")
            where += ": "
        if layer is not None:
            where += f"layer '{layer}': "
        super().__init__(where + self.message)

    def located(self, file, line=None) -> "NetspecError":
        """The same error (same type, same layer) placed at `file:line`."""
        return type(self)(self.message, file=file, line=line, column=self.column, layer=self.layer)


class ShapeError(NetspecError):
    """A blob's shape does not fit the layer that reads it."""
