"""agentstream-chat (python -m agentstream_client): chat with one of the app's agents (--agent).

Interactive by default: Enter or Ctrl-C while an answer streams pauses it (Enter resumes, /new
starts a new conversation, /quit exits). With --message it sends one message and streams the
answer to stdout (the exit code tells how the run ended); with --conversation (and --cursor)
alone it resumes reading a conversation's stream.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from agentstream.events import dumps_line

from .http import DEFAULT_AGENT, ApiClient, ApiError, ServerLost, StreamPosition, Unreachable
from .render import RESET, TerminalRenderer

EXIT_COMPLETED, EXIT_FAILED, EXIT_ERROR, EXIT_CANCELLED = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141  # 128 + SIGINT, 128 + SIGPIPE, as shells report
EXIT_BY_TERMINAL = {
    "run.completed": EXIT_COMPLETED,
    "run.failed": EXIT_FAILED,
    "run.cancelled": EXIT_CANCELLED,
}
PROG = "agentstream-chat"
NEW_COMMAND = "/new"
QUIT_COMMANDS = frozenset({"exit", "quit", "/exit", "/quit"})
RESUME, NEW, QUIT = "resume", "new", "quit"
DEFAULT_URL = "http://localhost:7071"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    interactive = args.message is None and args.conversation is None
    if interactive:
        _restore_ctrl_c()
    client = ApiClient(args.url, args.key, token=args.token, agent=args.agent)
    try:
        if args.message is not None:
            return one_shot(client, args.message, args.conversation, args.format)
        if args.conversation is not None:
            return resume(client, args.conversation, args.cursor, args.format)
        client.check_reachable()
        color = sys.stdout.isatty() and not args.no_color and "NO_COLOR" not in os.environ
        return Chat(client, TerminalRenderer(sys.stdout, color=color)).run()
    except Unreachable as exc:
        _error_line(f"{exc}; is it running? (`make run` starts it)")
        return EXIT_ERROR
    except ApiError as exc:
        _error_line(f"{exc.message} ({exc.code})")
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(RESET if sys.stdout.isatty() else "", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (`| head -1`): stop quietly, like tools killed by
        # SIGPIPE, and keep Python from complaining while it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    finally:
        client.close()


def _error_line(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


def _restore_ctrl_c() -> None:
    """Ctrl-C ends an interactive chat even when started with SIGINT ignored.

    A shell without job control starts background jobs with SIGINT ignored, and Python keeps it
    that way; a chat reading the user's terminal is in the foreground, so Ctrl-C must work.
    (The one-shot modes keep an inherited ignore, as a background job should.)
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN and sys.stdin.isatty():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        epilog="Exit codes: 0 completed, 1 the run failed, 2 error (app unreachable, an API "
        "error, the app lost mid-stream, bad usage), 3 cancelled, 130 Ctrl-C, 141 output pipe "
        "closed.",
    )
    parser.add_argument(
        "--url",
        type=with_scheme,
        default=os.environ.get("AGENTSTREAM_URL", DEFAULT_URL),
        help="base URL of the app; http:// when no scheme is given (env AGENTSTREAM_URL)",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get("AGENTSTREAM_FUNCTION_KEY"),
        help="function key (env AGENTSTREAM_FUNCTION_KEY)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("AGENTSTREAM_TOKEN"),
        help="bearer token, with AUTH_MODE=entra (env AGENTSTREAM_TOKEN)",
    )
    parser.add_argument(
        "--agent",
        default=os.environ.get("AGENTSTREAM_AGENT", DEFAULT_AGENT),
        help=f"the agent to talk to, as GET /api/agents lists them (default: {DEFAULT_AGENT}; "
        "env AGENTSTREAM_AGENT)",
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


def with_scheme(url: str) -> str:
    """``localhost:7071`` means ``http://localhost:7071``, as a browser reads it."""
    url = url.strip()
    return url if "://" in url else f"http://{url}"


def start_or_restart(
    client: ApiClient, message: str, conversation: str | None, note: Callable[[str], None]
) -> dict[str, Any]:
    """Send ``message``; when its conversation is gone (expired or deleted), start a new one."""
    try:
        return client.start(message, conversation)
    except ApiError as exc:
        if conversation is None or exc.code != "conversation_not_found":
            raise
    note(f"[conversation {conversation} is gone (expired or deleted); starting a new one]")
    return client.start(message, None)


def resume_hint(conversation: str, cursor: str | None, client: ApiClient) -> str:
    """The command that reads the rest: the options that differ from the defaults, the ids."""
    words = [PROG]
    if client.base_url != DEFAULT_URL:
        words += ["--url", client.base_url]
    if client.agent != DEFAULT_AGENT:
        words += ["--agent", client.agent]
    words += ["-c", conversation]
    if cursor:
        words += ["--cursor", cursor]
    return " ".join(words)


# --- one-shot modes ---------------------------------------------------------------------------


def one_shot(client: ApiClient, message: str, conversation: str | None, fmt: str) -> int:
    started = start_or_restart(client, message, conversation, _stderr_line)
    print(f"conversation {started['conversation_id']} run {started['run_id']}", file=sys.stderr)
    return _print_stream(client, started["conversation_id"], None, fmt)


def resume(client: ApiClient, conversation: str, cursor: str | None, fmt: str) -> int:
    return _print_stream(client, conversation, cursor, fmt)


def _stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _print_stream(client: ApiClient, conversation: str, cursor: str | None, fmt: str) -> int:
    position = StreamPosition(cursor=cursor)
    show, note = _printer(fmt, sys.stdout)
    last_type = None
    try:
        for event in client.follow(conversation, position, on_retry=note):
            show(event)
            last_type = event["type"]
    except ServerLost as exc:
        _error_line(f"{exc}. The run may still be going on; resume it with:")
        _stderr_line(f"  {resume_hint(conversation, position.cursor, client)}")
        return EXIT_ERROR
    except ApiError as exc:
        if exc.code == "conversation_not_found":
            _error_line(f"conversation {conversation} is gone (expired or deleted)")
            return EXIT_ERROR
        raise
    if last_type is None and position.ended:
        print("nothing to read after that cursor", file=sys.stderr)
        return EXIT_COMPLETED
    return EXIT_BY_TERMINAL.get(last_type or "", EXIT_ERROR)


Show = Callable[[dict[str, Any]], None]


def _printer(fmt: str, out: TextIO) -> tuple[Show, Callable[[str], None]]:
    """How to show an event, and how to show a note (on stderr) in that format."""
    if fmt == "ndjson":
        return (lambda event: print(dumps_line(event), file=out, flush=True)), _stderr_line
    if fmt == "sse":
        return (
            lambda event: print(
                f"id: {event['id']}\nevent: {event['type']}\ndata: {dumps_line(event)}\n",
                file=out,
                flush=True,
            )
        ), _stderr_line
    renderer = TerminalRenderer(out, notes=sys.stderr)

    def note(text: str) -> None:
        renderer.flush()  # the answer on stdout is whole; the note goes to stderr
        renderer.note(text)

    return renderer.show, note


# --- interactive ------------------------------------------------------------------------------


class Chat:
    """The interactive loop: prompt, send, stream; Enter or Ctrl-C pauses the stream."""

    def __init__(self, client: ApiClient, renderer: TerminalRenderer) -> None:
        self.client = client
        self.renderer = renderer
        self.conversation: str | None = None
        self.kept: list[str] = []  # lines typed while an answer streamed or was paused
        self.quit_code = EXIT_COMPLETED
        self._failure: BaseException | None = None

    def run(self) -> int:
        while True:
            if self.kept:
                line = self.kept.pop(0)
                print(f"You: {line}", flush=True)
            else:
                try:
                    line = input("You: ")
                except EOFError:
                    return EXIT_COMPLETED
            command = line.strip().lower()
            if command in QUIT_COMMANDS:
                return EXIT_COMPLETED
            if command == NEW_COMMAND:
                self.conversation = None
                self.renderer.note("[a new conversation starts with your next message]")
                continue
            if not command:
                continue
            try:
                started = start_or_restart(self.client, line, self.conversation, self.renderer.note)
            except ApiError as exc:
                self.renderer.note(f"[{exc.message}]")
                continue
            self.conversation = started["conversation_id"]
            print(f"Conversation: {self.conversation}  Entity: {started['entity_id']}", flush=True)
            if sys.stdin.isatty():
                print("Press [Enter] to interrupt the stream.", flush=True)
            if self._stream(StreamPosition(cursor=started["cursor"])) == QUIT:
                return self.quit_code

    def _stream(self, position: StreamPosition) -> str | None:
        """Follow the run to its end; ``QUIT`` when the user quit while it was paused."""
        while True:
            done_read, done_write = os.pipe()
            self._failure = None
            reader = threading.Thread(target=self._read, args=(position, done_write), daemon=True)
            reader.start()
            try:
                interrupted = self._wait_for_end_or_enter(done_read)
            except KeyboardInterrupt:
                interrupted = True  # Ctrl-C mid-stream pauses, as Enter does
            finally:
                if reader.is_alive():
                    position.interrupt()  # Enter or Ctrl-C: stop the reader before going on
                reader.join()
                os.close(done_read)
            if not interrupted:
                self._after_reading(position)
                return None
            choice = self._paused(position)
            if choice != RESUME:
                return choice
            self.renderer.note("[resuming]")
            position = StreamPosition(cursor=position.cursor, reconnects=position.reconnects)

    def _paused(self, position: StreamPosition) -> str:
        """Ask what to do with a paused stream: ``RESUME``, ``NEW`` or ``QUIT``."""
        self.renderer.note(
            f"[stopped reading at cursor {position.cursor}. Press [Enter] to resume; "
            f"{NEW_COMMAND} starts a new conversation, /quit exits]"
        )
        while True:
            try:
                line = input()
            except EOFError:
                line = "/quit"
            except KeyboardInterrupt:
                line, self.quit_code = "/quit", EXIT_INTERRUPTED
            command = line.strip().lower()
            if not command:
                return RESUME
            if command in QUIT_COMMANDS:
                hint = resume_hint(self.conversation or "", position.cursor, self.client)
                self.renderer.note(f"[the run goes on; read the rest with: {hint}]")
                return QUIT
            if command == NEW_COMMAND:
                self.conversation = None
                self.renderer.note("[a new conversation starts with your next message]")
                return NEW
            self._keep(line)

    def _keep(self, line: str) -> None:
        self.kept.append(line)
        self.renderer.note("[kept: it is sent when this answer ends. Press [Enter] to resume]")

    def _after_reading(self, position: StreamPosition) -> None:
        failure = self._failure
        if failure is None:
            return
        self.renderer.flush()
        if isinstance(failure, ServerLost):
            hint = resume_hint(self.conversation or "", position.cursor, self.client)
            self.renderer.note(
                f"[{failure}. The run may still be going on; once the app is back, "
                f"resume it with: {hint}]"
            )
        elif isinstance(failure, ApiError):
            self.renderer.note(f"[{failure.message}]")
        else:
            raise failure

    def _read(self, position: StreamPosition, done: int) -> None:
        try:
            for event in self.client.follow(
                self.conversation or "", position, on_retry=self.renderer.note
            ):
                self.renderer.show(event)
        except Exception as exc:  # noqa: BLE001 - handed to the main thread, which reports it
            self._failure = exc
        finally:
            os.write(done, b"x")
            os.close(done)

    def _wait_for_end_or_enter(self, done: int) -> bool:
        """Block until the reader finishes (False) or the user presses Enter (True).

        Only a terminal's Enter interrupts: lines piped to stdin are the next prompts. A line
        typed while the answer streams is kept as the next message, and the answer goes on.
        """
        with selectors.DefaultSelector() as selector:
            selector.register(done, selectors.EVENT_READ)
            if sys.stdin.isatty():
                selector.register(sys.stdin, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj == done:
                        return False
                    line = sys.stdin.readline()
                    if not line:
                        selector.unregister(sys.stdin)  # end of input: just wait for the end
                    elif line.strip():
                        self.kept.append(line.rstrip("\n"))
                        self.renderer.note("[kept: it is sent when this answer ends]")
                    else:
                        return True


if __name__ == "__main__":
    sys.exit(main())
