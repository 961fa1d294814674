"""`sst-edge watch` from parsed arguments: sources and sinks built, the watch run, its summary on stderr.

stdout carries events alone (JSON lines), so it can be piped; everything else goes to stderr."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ...fileio import atomic_write_text
from ..engine import FewShotRuntime
from .events import EventPolicy
from .sinks import FileSink, Sink, StdoutSink
from .sources import parse_source
from .watch import Watch, WatchSettings


def sinks_from(args: argparse.Namespace) -> list[Sink]:
    sinks: list[Sink] = [] if args.no_stdout else [StdoutSink(getattr(args, "result_stream", None))]
    if args.events:
        sinks.append(FileSink(args.events))
    if args.mqtt:
        from .mqtt import MqttSink  # paho: the [mqtt] extra, imported only when asked for

        sinks.append(MqttSink(args.mqtt))
    return sinks


def watch(args: argparse.Namespace) -> int:
    specs = [parse_source(s) for s in args.source]  # every source named before anything opens
    policy = EventPolicy(args.enter, args.leave, args.margin, args.min_duration)
    settings = WatchSettings(span=args.span, stride=args.stride, smooth=args.smooth, realtime=args.realtime,
                             max_fps=args.max_fps, policy=policy, head=args.head,
                             threshold=args.threshold, min_shots=args.min_shots,
                             status_every=args.status_every, exit_on_error=args.exit_on_error,
                             max_reconnects=args.max_reconnects, duration=args.duration)
    rt = FewShotRuntime(args.model, threads=args.threads)
    sinks = sinks_from(args)
    report = Watch(rt, args.gallery, specs, sinks, settings, err=sys.stderr).run()
    summary = json.dumps(report.to_dict(), indent=2, sort_keys=True)
    for line in [summary] if args.json else report.lines():  # stdout holds the events alone
        print(line, file=sys.stderr)
    if args.summary:
        atomic_write_text(Path(args.summary), summary + "\n")
    return report.exit_code
