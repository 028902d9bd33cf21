"""The example plugins the package carries, one directory each (a task, a triggered task, a
job and a declarative task, as data: none is imported from here).

``iochost serve --examples DIR`` adds every plugin directory under DIR at start; from a
checkout, DIR is ``plugins-example`` (a link to this folder); from an installed wheel,
``python -m iochost.examples`` prints this folder's path:
``iochost serve --examples "$(python -m iochost.examples)"``.
"""

from pathlib import Path

DIRECTORY = Path(__file__).resolve().parent
