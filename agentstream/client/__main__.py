"""``agentstream-chat`` / ``python -m agentstream.client``: chat with the travel planner.

Interactive by default. With ``--message`` it sends one message and streams the answer to stdout
(the exit code tells how the run ended); with ``--conversation`` (and ``--cursor``) alone it
resumes reading a conversation's stream.
"""

from __future__ import annotations

import argparse
import os
import selectors
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from ..events import dumps_line
from .http import ApiClient, ApiError, StreamPosition
from .render import RESET, TerminalRenderer

EXIT_COMPLETED, EXIT_FAILED, EXIT_ERROR, EXIT_CANCELLED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_BY_TERMINAL = {
    "run.completed": EXIT_COMPLETED,
    "run.failed": EXIT_FAILED,
    "run.cancelled": EXIT_CANCELLED,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    client = ApiClient(args.url, args.key)
    try:
        if args.message is not None:
            return one_shot(client, args.message, args.conversation, args.format)
        if args.conversation is not None:
            return resume(client, args.conversation, args.cursor, args.format)
        color = sys.stdout.isatty() and not args.no_color and "NO_COLOR" not in os.environ
        return Chat(client, TerminalRenderer(sys.stdout, color=color)).run()
    except ApiError as exc:
        print(f"error: {exc.message} ({exc.code})", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(RESET if sys.stdout.isatty() else "", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        client.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentstream-chat", description=__doc__)
    parser.add_argument(
        "--url",
        default=os.environ.get("AGENTSTREAM_URL", "http://localhost:7071"),
        help="base URL of the app (env AGENTSTREAM_URL)",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get("AGENTSTREAM_FUNCTION_KEY"),
        help="function key (env AGENTSTREAM_FUNCTION_KEY)",
    )
    parser.add_argument("-m", "--message", help="send this message, stream the answer, exit")
    parser.add_argument("-c", "--conversation", help="conversation id to continue or resume")
    parser.add_argument("--cursor", help="with --conversation alone: resume after this id")
    parser.add_argument(
        "--format",
        choices=("text", "sse", "ndjson"),
        default="text",
        help="output of the one-shot modes (default: the text)",
    )
    parser.add_argument("--no-color", action="store_true", help="no dimmed tool lines")
    return parser


# --- one-shot modes ---------------------------------------------------------------------------


def one_shot(client: ApiClient, message: str, conversation: str | None, fmt: str) -> int:
    started = client.start(message, conversation)
    print(f"conversation {started['conversation_id']} run {started['run_id']}", file=sys.stderr)
    return _print_stream(client, started["conversation_id"], None, fmt)


def resume(client: ApiClient, conversation: str, cursor: str | None, fmt: str) -> int:
    return _print_stream(client, conversation, cursor, fmt)


def _print_stream(client: ApiClient, conversation: str, cursor: str | None, fmt: str) -> int:
    position = StreamPosition(cursor=cursor)
    show = _printer(fmt, sys.stdout)
    last_type = None
    for event in client.follow(conversation, position):
        show(event)
        last_type = event["type"]
    if last_type is None and position.ended:
        print("nothing to read after that cursor", file=sys.stderr)
        return EXIT_COMPLETED
    return EXIT_BY_TERMINAL.get(last_type or "", EXIT_ERROR)


def _printer(fmt: str, out: TextIO) -> Callable[[dict[str, Any]], None]:
    if fmt == "ndjson":
        return lambda event: print(dumps_line(event), file=out, flush=True)
    if fmt == "sse":
        return lambda event: print(
            f"id: {event['id']}\nevent: {event['type']}\ndata: {dumps_line(event)}\n",
            file=out,
            flush=True,
        )
    return TerminalRenderer(out, notes=sys.stderr).show


# --- interactive ------------------------------------------------------------------------------


class Chat:
    """The interactive loop: prompt, send, stream; Enter interrupts and resumes."""

    def __init__(self, client: ApiClient, renderer: TerminalRenderer) -> None:
        self.client = client
        self.renderer = renderer
        self.conversation: str | None = None

    def run(self) -> int:
        while True:
            try:
                line = input("You: ")
            except EOFError:
                return EXIT_COMPLETED
            if line.strip().lower() in ("exit", "quit"):
                return EXIT_COMPLETED
            if not line.strip():
                continue
            try:
                started = self.client.start(line, self.conversation)
            except ApiError as exc:
                self.renderer.note(f"[{exc.message}]")
                continue
            self.conversation = started["conversation_id"]
            print(f"Conversation: {self.conversation}  Entity: {started['entity_id']}")
            print("Press [Enter] to interrupt the stream.", flush=True)
            self._stream(StreamPosition(cursor=started["cursor"]))

    def _stream(self, position: StreamPosition) -> None:
        assert self.conversation is not None
        while True:
            done_read, done_write = os.pipe()
            reader = threading.Thread(target=self._read, args=(position, done_write), daemon=True)
            reader.start()
            interrupted = self._wait_for_end_or_enter(done_read)
            if not interrupted:
                reader.join()
                os.close(done_read)
                return
            position.interrupt()
            reader.join()
            os.close(done_read)
            self.renderer.note(
                f"[stopped reading at cursor {position.cursor}; the agent keeps "
                "going. Press [Enter] to resume]"
            )
            sys.stdin.readline()
            self.renderer.note("[resuming]")
            position = StreamPosition(cursor=position.cursor, reconnects=position.reconnects)

    def _read(self, position: StreamPosition, done: int) -> None:
        try:
            for event in self.client.follow(self.conversation or "", position):
                self.renderer.show(event)
        except ApiError as exc:
            self.renderer.note(f"[{exc.message}]")
        finally:
            os.write(done, b"x")
            os.close(done)

    @staticmethod
    def _wait_for_end_or_enter(done: int) -> bool:
        """Block until the reader finishes (False) or the user presses Enter (True)."""
        with selectors.DefaultSelector() as selector:
            selector.register(done, selectors.EVENT_READ)
            selector.register(sys.stdin, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj == done:
                        return False
                    sys.stdin.readline()
                    return True


if __name__ == "__main__":
    sys.exit(main())
