"""`python -m liveqa.serve [daphne's arguments]`: daphne on uvloop's event loop where there is one.

daphne runs Twisted on an asyncio loop that it creates when it is imported; with uvloop's policy set
first, that loop is uvloop's (Twisted's asyncio reactor accepts it since Twisted 21.7)."""

import asyncio

from liveqa.startup import uvloop

if uvloop is not None:
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

# Imported after the policy is set: daphne makes its loop when it is imported.
from daphne.cli import CommandLineInterface

if __name__ == "__main__":
    CommandLineInterface.entrypoint()
