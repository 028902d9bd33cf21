"""``python -m iochost.examples``: print the folder of the bundled example plugins."""

from iochost.examples import DIRECTORY

print(DIRECTORY)
