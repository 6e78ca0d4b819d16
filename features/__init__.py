"""streamrec's feature layer: the event vocabulary, feature math and state, the online store.

Modules
-------
``messages``      every topic's message schema and the ids (``ClickEvent``, ``ItemMsg``, …).
``routing``       which partition a user's events live on; copies of records sent elsewhere.
``schema``        every view, entity and feature (name, type): the one source of truth.
``config``        :class:`FeatureConfig`, nested into the process settings.
``repo``          the Feast repo (entities, push + file sources, views); ``apply_repo``.
``activity``, ``formulas``, ``window``
                  pure pieces: counts/means, decay, smoothing, idempotency window.
``user_state``, ``item_state``, ``global_state``
                  pure per-entity state and the update functions the pipeline calls.
``online``        the online store: :class:`OnlineFeatureStore`, the one interface the
                  pipeline uses (rows, candidate inputs, item indexes, seen items, the
                  list cache), and its Redis implementation, one connection pool.
``codec``, ``packing``, ``resp``, ``redis_conn``, ``indexes``, ``list_cache``, ``batching``
                  behind it: Feast's Redis layout without feast, one raw round trip per
                  batch, the indexes and list cache beside Feast's rows, rows
                  micro-batched and coalesced per entity.
``history``, ``export``
                  offline: the same update functions over an event log → parquet → Feast.
``verify``        the invariant check: online counts and means against a recomputation
                  from ``clickstream`` and the DLQ (``streamrec verify``; every bench ends with it).

The worker's stages that call all this are in ``stream/`` (``user_side.py``,
``item_side.py``); the benchmark, the test worker harness and the ``features``
commands in ``tools/`` (``bench_features.py``, ``harness.py``, ``features_cli.py``).

How the pipeline uses it (the stages hold no feature logic)
-----------------------------------------------------------
Per batch of ``clickstream`` records, each user's events in partition order:
``apply_user_event(state, event, cfg, source=(partition, offset))`` on the user's
:class:`UserState` either returns ``Skipped`` ("duplicate": nothing changed;
"late": the event goes to the DLQ) or a ``UserUpdate``: the user's new feature row
and the item messages. Accepted events also go into the partition's
:class:`GlobalShard`. The batch's rows go to a :class:`MicroBatchWriter`, which
writes each entity's last row of a batch (rows are whole states) in one pipelined
round trip; the item messages go out on the repartition topic, one message per
item partition per batch, and the item side applies each with ``apply_item_event``
and queues the changed items' rows the same way. States are kept decoded in memory
and reach their changelog before each offset commit.

Guarantees: a redelivered record changes nothing (offset marks), a re-sent event id
is refused while the entity remembers it, and every distinct event is applied or
refused as ``late`` (older than the entity's newest event by more than
``allowed_lateness_s``), never dropped for want of memory (see ``window.py``);
aggregates are order-insensitive by event time; each row written is an entity's
whole state, so the online store converges to the state tables. Co-visitation: by
default the event's item learns the user's recent items (one item message per
event); ``covisit_symmetric=True`` also tells each recent item (one more message per
co-visit).
"""
