"""Contender (2): a Faust agent that only iterates over raw bytes; Faust's defaults otherwise.

The only settings changed are those needed to run against the embedded
broker and a fresh group: fast session/rebalance timeouts, earliest offset
reset, a free web port and a private data directory.
"""

from __future__ import annotations

import faust

from bench.contenders.progress import Progress, common_arguments, faust_app, run_faust


def main() -> None:
    parser = common_arguments(__doc__ or "")
    parser.add_argument("--fastpath", action="store_true",
                        help="use streams.runtime.fastpath.FastPathApp (its consumer and tuned settings) "
                             "instead of faust.App")
    args = parser.parse_args()
    app_class: type[faust.App] = faust.App
    if args.fastpath:
        from streams.runtime.fastpath import FastPathApp

        app_class = FastPathApp
    app = faust_app(args, app_class)
    topic = app.topic(args.topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    progress = Progress(args.progress, args.events)

    @app.agent(topic)
    async def iterate(stream: faust.StreamT[bytes]) -> None:
        async for _value in stream:
            progress.seen()

    run_faust(app, progress)


if __name__ == "__main__":
    main()
