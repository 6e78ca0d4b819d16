"""streamrec's feature layer: Feast schema, streaming state logic, fast online client.

Modules
-------
``schema``        every view, entity and feature (name, type): the one source of truth.
``config``        :class:`FeatureConfig`, nested into the process settings.
``repo``          the Feast repo (entities, push + file sources, views); ``apply_repo``.
``activity``, ``formulas``, ``window``
                  pure pieces: counts/means, decay, smoothing, idempotency window.
``user_state``, ``item_state``, ``global_state``
                  pure per-entity state and the update functions the agents call.
``codec``, ``resp``, ``online``, ``indexes``, ``batching``
                  Feast's Redis layout without feast; one raw round trip per batch.
``history``, ``export``
                  offline: the same update functions over an event log → parquet → Feast.
``verify``        the invariant check: online counts and means against a recomputation
                  from ``clickstream`` and the DLQ (``streamrec verify``; every bench ends with it).
``harness``, ``bench``, ``cli``
                  a real worker process for tests/bench, the benchmark, ``streamrec`` commands.

Wiring the worker (the agents hold no feature logic)
----------------------------------------------------
At start (once): ``apply_repo(cfg, redis_url, data_dir)`` (imports feast: run it in
a child process or before consuming), then ``store = RedisFeatureStore.from_url(url,
cfg)`` and ``writer = MicroBatchWriter(store, batch_size=cfg.batch_size,
flush_ms=cfg.flush_ms)``.

``clickstream`` agent (keyed by user id, events in partition order), per event:

1. ``state = UserState.from_dict(users[user_id])`` (or ``UserState()``);
2. ``result = apply_user_event(state, event, cfg, source=(partition, offset))``; if
   ``isinstance(result, Skipped)`` count ``result.reason`` ("duplicate" / "late"),
   send a ``late`` one to the DLQ, and stop: nothing changed. ``source`` makes
   redelivery exact on both sides (offset high-water marks per source partition);
   without it only the bounded event-id window catches a repeated event;
3. ``users[user_id] = state.to_dict()``;
4. ``shard = GlobalShard.from_dict(shards[shard_id(partition)])``; ``shard.add(event)``;
   store it back; ``await writer.submit([result.row, shard.row(shard_id(partition))])``;
5. for ``msg`` in ``result.item_messages``: send ``msg.to_bytes()`` keyed by
   ``msg.item_id`` to the item repartition topic.

Item agent (keyed by item id), per message ``ItemMsg.model_validate_json(raw)``:
``apply_item_event(state, msg, cfg)`` → on ``ItemUpdate`` store ``state.to_dict()``
and ``await writer.submit([update.row])``; on ``Skipped`` count and stop.

On shutdown: ``await writer.close()`` then ``await store.close()``.

The recommend step reads with ``store.read_many([...])`` (one round trip for the user
and its candidates), ``store.top_items_by_mean(k)``, ``store.top_items_by_popularity(k)``
and ``store.seen_items(user_id)``; co-visitation candidates are the
``covisit_items`` of the user's ``recent_items``.

Guarantees: a redelivered record changes nothing (offset marks), a re-sent event id
is refused while the entity remembers it, and every distinct event is applied or
refused as ``late`` (older than the entity's newest event by more than
``allowed_lateness_s``), never dropped for want of memory (see ``window.py``);
aggregates are order-insensitive by event time; each row written is an entity's
whole state, so the online store converges to the state tables. Co-visitation: by default the event's item learns
the user's recent items (one item message per event); ``covisit_symmetric=True``
also tells each recent item (one more message per co-visit).
"""
