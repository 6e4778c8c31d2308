"""The Faust app: topics, tables, agents, timers and web views.

Thin wiring: records are raw bytes, the work is done by the processors
(streams/runtime/processors.py) around the pure modules.

    orders    ──► process_orders    ──► state table, orders-dead-letters, pairs topic, customers topic,
                                        detection topic
    detection ──► process_detection ──► drop-detection table (one partition: one worker tests the fleet)
    pairs     ──► process_pairs     ──► pairs table ──► recommendations.<horizon>
    customers ──► process_customers ──► customers table (RocksDB on disk)
"""

from __future__ import annotations

import logging
import os
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import faust
import orjson
import yarl
from faust.types import TP
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)

from streams.ops.security import broker_credentials
from streams.pairs.outbox import owner_partition
from streams.runtime.customers import CustomerProcessor
from streams.runtime.disk_store import DiskTable, store_options
from streams.runtime.exposition import TextExposition
from streams.runtime.fastpath import FastPathApp
from streams.runtime.fleet_detection import DetectionProcessor
from streams.runtime.follower import TopicFollower
from streams.runtime.metrics import CrossSellCollector, CustomerCollector, FlushFailureCollector
from streams.runtime.processors import OrderProcessor, PairProcessor, Recommender
from streams.runtime.store import PartitionedTable
from streams.settings import Settings

log = logging.getLogger(__name__)

STATE_TABLE = "state"
PAIRS_TABLE = "pairs"
CUSTOMERS_TABLE = "customers"
DETECTION_TABLE = "drop-detection"
LIVE_PAGE = Path(__file__).parent.parent / "static" / "live.html"


PRODUCER_STOPPED_EXIT = 4  # the worker's exit code when its producer stopped for good (see producer_stopped)


def producer_stopped(app: faust.App) -> BaseException | None:
    """Why the app's producer stopped for good, or None while it runs.

    Faust's producer buffer stops on a send it cannot make (a message over the
    client's request size, a serialisation error) and never starts again: every
    later flush would wait for the broker forever while the worker looks alive.
    """
    buffer = getattr(app.producer, "buffer", None)
    if buffer is None or not buffer.crashed:
        return None
    return buffer.crash_reason or RuntimeError("the producer buffer stopped")


@dataclass
class Pipeline:
    app: faust.App
    orders: OrderProcessor
    pairs: PairProcessor
    recommender: Recommender
    customers: CustomerProcessor | None = None
    follower: TopicFollower | None = None  # reads the markers and the published lists, whole, in every worker
    detection: DetectionProcessor | None = None


def create_app(settings: Settings, app_class: type[faust.App] | None = None) -> tuple[faust.App, OrderProcessor]:
    pipeline = create_pipeline(settings, app_class)
    return pipeline.app, pipeline.orders


def create_pipeline(settings: Settings, app_class: type[faust.App] | None = None) -> Pipeline:
    """The app and its processors. ``app_class`` defaults to the fast path (streams/runtime/fastpath.py),
    or to plain Faust with ``CROSSSELL_FAST_PATH=false``; the benchmark passes its variants."""
    if app_class is None:
        app_class = FastPathApp if settings.fast_path else faust.App
    app = app_class(
        settings.app_id,
        broker=settings.broker_url,
        broker_credentials=broker_credentials(settings),
        store="memory://",
        datadir=settings.data_dir,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=0,  # memory store: a standby copy would not shorten recovery
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_seconds,
        broker_rebalance_timeout=settings.rebalance_timeout_seconds,
        broker_heartbeat_interval=settings.heartbeat_interval_seconds,
        producer_acks=-1,
        # The customer table writes one changelog record per changed customer per flush; without a
        # linger aiokafka sent them in nearly one request each (a worker over 30,000 orders: 128 -> 81
        # CPU us per event with 5 ms). The orders path writes a few keys per flush and keeps 0.
        producer_linger=0.005 if settings.customers else 0.0,
        # Events are acked only once a flush made their state durable, so Faust need not
        # wait for acks on shutdown or rebalance (it would wait for the next flush timer,
        # which stops first): what is not acked is replayed, and the offsets kept with the
        # state make the replay exact.
        stream_wait_empty=False,
        key_serializer="raw",
        value_serializer="raw",
        # Faust's /router/ and /table/ pages would list the cluster and serve raw table keys.
        web_tables_enabled=False,
    )

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, partitions=settings.partitions,
                         key_serializer="raw", value_serializer="raw")

    # Orders reach the agent in batches, one per partition per fetch (streams/runtime/fastpath.py);
    # an app without batched topics (plain Faust, CROSSSELL_FAST_PATH=false) delivers them one by one.
    batched_topic = getattr(app, "batched_topic", None)
    orders_topic = raw_topic(settings.orders_topic) if batched_topic is None else batched_topic(
        settings.orders_topic, key_type=bytes, value_type=bytes, partitions=settings.partitions,
        key_serializer="raw", value_serializer="raw")
    pairs_topic = raw_topic(settings.pairs_topic)
    recommendation_topics = {h: raw_topic(settings.recommendations_topic_for(h)) for h in settings.horizon_labels}

    def table(name: str, help: str, partitions: int = settings.partitions) -> PartitionedTable:
        created = PartitionedTable(app=app, name=name, default=None, partitions=partitions,
                                   key_type=bytes, value_type=bytes, help=help)
        created.max_record_bytes = settings.max_message_bytes
        app.tables.add(created)
        return created

    state = table(STATE_TABLE, "Per orders-partition windows, counters and offsets (streams/orders/ledger.py).")
    pair_state = table(PAIRS_TABLE, "Per pairs-partition product and pair counts (streams/pairs/ledger.py).")

    customers: CustomerProcessor | None = None
    customers_topic: faust.TopicT | None = None
    if settings.customers:
        customers_topic = raw_topic(settings.customers_topic)
        customer_state = DiskTable(app=app, name=CUSTOMERS_TABLE, default=None, partitions=settings.partitions,
                                   key_type=bytes, value_type=bytes, options=store_options(settings.customer_cache_mb),
                                   help="Per customer-partition customer states and counts (streams/customers/).")
        customer_state.max_record_bytes = settings.max_message_bytes
        app.tables.add(customer_state)
        customers = CustomerProcessor(settings, customer_state)
        customer_state.recovered_callbacks.append(customers.restore)

    # One partition, and a table of one: Faust assigns both to the same worker (they are co-partitioned).
    detection_topic = app.topic(settings.detection_topic_name, key_type=bytes, value_type=bytes, partitions=1,
                                key_serializer="raw", value_serializer="raw")
    detection_state = table(DETECTION_TABLE, "The fleet's drop test: tested ticks and CUSUMs "
                            "(streams/orders/fleet_detection.py).", partitions=1)
    detection = DetectionProcessor(settings, detection_state)
    detection_state.recovered_callbacks.append(detection.restore)

    orders = OrderProcessor(settings, state, raw_topic(settings.dead_letter_topic), pairs_topic,
                            customers=customers_topic, detection=detection_topic)
    orders.drop_test = detection.view
    pairs = PairProcessor(settings, pair_state)
    recommender = Recommender(settings, pairs, recommendation_topics)
    state.recovered_callbacks.append(orders.restore)
    pair_state.recovered_callbacks.append(pairs.restore)
    orders.highwaters = lambda: _highwaters(app, settings.orders_topic)

    @app.agent(orders_topic, name="orders")
    async def process_orders(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            orders.process(event)
            if orders.flush_due():
                await orders.flush(wait=False)  # applying goes on while the broker acknowledges it

    @app.agent(pairs_topic, name="pairs")
    async def process_pairs(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            await pairs.process(event)

    @app.agent(detection_topic, name="detection")
    async def process_detection(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            detection.process(event)

    @app.timer(settings.flush_interval_seconds)
    async def flush_orders() -> None:
        await orders.flush()

    @app.timer(1.0)
    async def watch_producer() -> None:
        # A stopped producer is fatal: exit non-zero, so that the worker is restarted (compose's
        # restart policy; `python -m streams run` restarts it too, streams/ops/restarts.py) and
        # recovers exactly from the changelog, as after a crash.
        reason = producer_stopped(app)
        if reason is not None:
            log.critical("the producer stopped for good (%r): nothing can be written any more; exiting with "
                         "code %d so that the worker restarts and recovers from the changelog",
                         reason, PRODUCER_STOPPED_EXIT)
            logging.shutdown()
            os._exit(PRODUCER_STOPPED_EXIT)

    @app.timer(settings.flush_interval_seconds)
    async def flush_detection() -> None:
        await detection.flush()

    if customers is not None and customers_topic is not None:
        customer_processor = customers

        @app.agent(customers_topic, name="customers")
        async def process_customers(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.noack().events():  # type: ignore[attr-defined]
                customer_processor.process(event)

        @app.timer(settings.flush_interval_seconds)
        async def flush_customers() -> None:
            await customer_processor.flush()

    @app.timer(settings.pair_flush_interval_seconds)
    async def flush_pairs() -> None:
        await pairs.flush()

    @app.timer(settings.recommendation_interval_seconds)
    async def publish_recommendations() -> None:
        await recommender.publish()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def drop_revoked(app: faust.App, revoked: set[TP], **kwargs: Any) -> None:
        await orders.revoke({tp.partition for tp in revoked if tp.topic == settings.orders_topic})
        await pairs.revoke({tp.partition for tp in revoked if tp.topic == settings.pairs_topic})
        await detection.revoke({tp.partition for tp in revoked if tp.topic == settings.detection_topic_name})
        if customers is not None:
            await customers.revoke({tp.partition for tp in revoked if tp.topic == settings.customers_topic})

    # Every worker reads the whole markers topic (not a group's share): each compares before/after alike.
    # So does the recommendations topic of the first horizon, for the hit rate (when it is on).
    lists_topic = settings.recommendations_topic_for(settings.horizon_labels[0]) \
        if settings.horizon_labels and orders.lists is not None else None

    def followed(topic: str, key: bytes, value: bytes | None) -> None:
        if topic == settings.markers_topic:
            orders.take_marker(key, value)
        elif topic == lists_topic:
            orders.take_list(key, value)

    follower = TopicFollower(settings, [settings.markers_topic, *([lists_topic] if lists_topic else [])], followed)

    # Started with the worker, not awaited: blocking the event loop while a partition's state is
    # restored stalled the worker after SIGKILLs (tests/integration/test_crash_recovery.py). Orders
    # applied before the lists are read (a restart's first seconds) count as without a list.
    @app.task
    async def follow_topics() -> None:
        follower.start()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_following(app: faust.App, **kwargs: Any) -> None:
        follower.stop()
        await orders.settle_before_dropping()  # the producer still runs: the outstanding flush completes

    pipeline = Pipeline(app, orders, pairs, recommender, customers, follower, detection)
    _web_views(app, settings, pipeline, pair_state)
    return pipeline


def _highwaters(app: faust.App, topic: str) -> dict[int, int]:
    """Next offset to be written per owned orders partition, as last fetched by the consumer."""
    highwaters: dict[int, int] = {}
    try:
        for tp in app.consumer.assignment():
            if tp.topic == topic:
                value = app.consumer.highwater(tp)
                if value is not None:
                    highwaters[tp.partition] = int(value)
    except Exception:
        return {}
    return highwaters


def metrics_registry(settings: Settings, pipeline: Pipeline) -> CollectorRegistry:
    """What /metrics serves: the pipeline's collectors and prometheus_client's process, gc and platform ones."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(CrossSellCollector(pipeline.orders.snapshot, settings, pipeline.recommender))

    def flush_failures() -> dict[str, int]:
        failures = {"orders": pipeline.orders.flush_failures, "pairs": pipeline.pairs.flush_failures}
        if pipeline.customers is not None:
            failures["customers"] = pipeline.customers.flush_failures
        if pipeline.detection is not None:
            failures["detection"] = pipeline.detection.flush_failures
        return failures

    registry.register(FlushFailureCollector(flush_failures))
    if pipeline.customers is not None:
        keeper = pipeline.customers
        registry.register(CustomerCollector(keeper.summary, lambda: keeper.expired))
    for standard in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):
        registry.register(standard)
    return registry


def _web_views(app: faust.App, settings: Settings, pipeline: Pipeline, pair_state: PartitionedTable) -> None:
    registry = metrics_registry(settings, pipeline)
    exposition = TextExposition()  # generate_latest's bytes for less CPU (streams/runtime/exposition.py)

    def json_response(data: Any, status: int = 200) -> Any:
        return aiohttp.web.Response(body=orjson.dumps(data), status=status, content_type="application/json")

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # A plain aiohttp response: Faust's helper cannot carry the charset parameter.
        return aiohttp.web.Response(body=exposition.render(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/api/summary")
    async def summary(web: Any, request: Any) -> Any:
        snapshot = pipeline.orders.snapshot()
        data = snapshot.as_json()
        data["experiments"] = snapshot.experiments_json(settings)
        data["attribution"] = snapshot.attribution_json(settings)
        data["potential"] = snapshot.potential_json()
        data["hit_rate"] = snapshot.hit_rate_json(settings)
        data["opportunities"] = snapshot.opportunities_json()
        # The page compares the newest event time with the worker's clock, not the browser's.
        data["clock"] = time.time()
        data["stale_after_seconds"] = settings.stale_after_seconds
        data["top_product_pairs"] = pipeline.recommender.top_pairs(settings.horizon_labels[0], settings.top_pairs) \
            if settings.horizon_labels else []
        if pipeline.customers is not None:
            data["customers"] = pipeline.customers.summary().as_json()
        return json_response(data)

    @app.page("/api/experiments")
    async def experiments(web: Any, request: Any) -> Any:
        return json_response(pipeline.orders.snapshot().experiments_json(settings))

    @app.page("/api/attribution")
    async def attribution(web: Any, request: Any) -> Any:
        return json_response(pipeline.orders.snapshot().attribution_json(settings))

    @app.page("/api/hit-rate")
    async def hit_rate(web: Any, request: Any) -> Any:
        return json_response(pipeline.orders.snapshot().hit_rate_json(settings))

    @app.page("/api/potential")
    async def potential(web: Any, request: Any) -> Any:
        return json_response(pipeline.orders.snapshot().potential_json())

    @app.page("/api/opportunities")
    async def opportunities(web: Any, request: Any) -> Any:
        return json_response(pipeline.orders.snapshot().opportunities_json())

    @app.page("/api/detection")
    async def detection(web: Any, request: Any) -> Any:
        return json_response(pipeline.orders.snapshot().detection_json())

    @app.page("/api/pairs/categories")
    async def category_pairs(web: Any, request: Any) -> Any:
        views = pipeline.orders.snapshot().as_json(top=settings.top_pairs)["views"]
        return json_response({window: view["top_category_pairs"] for window, view in views.items()})

    @app.page("/api/pairs/products")
    async def product_pairs(web: Any, request: Any) -> Any:
        return json_response({h: pipeline.recommender.top_pairs(h, settings.top_pairs)
                              for h in settings.horizon_labels})

    @app.page("/api/recommendations/{product}")
    async def recommendations(web: Any, request: Any,
                              product: str) -> Any:
        found = pipeline.recommender.recommendations(product)
        if found is not None:
            return json_response(found)
        owner = _owner_url(app, pair_state, owner_partition(product, settings.partitions))
        if owner is None:
            return json_response({"error": f"no worker owns the pairs partition of {product!r} right now"}, 503)
        # Built as already encoded: parsing it again would turn %2E%2E back into ".." and drop it.
        raise aiohttp.web.HTTPTemporaryRedirect(yarl.URL(f"{owner.rstrip('/')}{recommendations_path(product)}",
                                                         encoded=True))

    @app.page("/api/customers")
    async def customers(web: Any, request: Any) -> Any:
        if pipeline.customers is None:
            return json_response({"error": "customer-level counts are off (CROSSSELL_CUSTOMERS=false)"}, 404)
        return json_response(pipeline.customers.summary().as_json())

    @app.page("/health/live")
    async def live(web: Any, request: Any) -> Any:
        # Answering at all is the point: the event loop runs.
        return json_response({"live": True})

    @app.page("/health/ready")
    async def ready(web: Any, request: Any) -> Any:
        state = readiness(app)
        return json_response({**state, "partitions": sorted(pipeline.orders.ledgers)}, 200 if state["ready"] else 503)

    @app.page("/")
    async def live_page(web: Any, request: Any) -> Any:
        return aiohttp.web.Response(body=LIVE_PAGE.read_bytes(), content_type="text/html", charset="utf-8")


def readiness(app: faust.App) -> dict[str, Any]:
    """Ready: in the consumer group, not rebalancing, and the tables recovered (state restored)."""
    recovery = getattr(app.tables, "recovery", None)  # TableManager has it; its type does not say so
    recovered = recovery is not None and recovery.completed.is_set()
    if app.rebalancing:
        return {"ready": False, "reason": "rebalancing"}
    if not recovered or app.in_recovery:
        return {"ready": False, "reason": "recovering table state"}
    return {"ready": True}


def recommendations_path(product: str) -> str:
    """The path of ``product``'s lists, escaped so that any id (``tv/55``, ``a?b``, ``..``) stays one segment."""
    return "/api/recommendations/" + urllib.parse.quote(product, safe="").replace(".", "%2E")


def _owner_url(app: faust.App, table: PartitionedTable, partition: int) -> str | None:
    """The web URL of the worker holding ``partition`` of ``table`` (from the group assignment)."""
    topic = table.changelog_topic.get_topic_name()
    for host, topics in app.router.table_metadata(table.name).items():
        if partition in topics.get(topic, ()):
            return str(host)
    return None
