"""Task names, queue names and the route of each task, shared by the API (which enqueues by name) and the
workers (which define the tasks)."""

INDEX_ITEMS = "hybridrec.index_items"
DELETE_ITEMS = "hybridrec.delete_items"
REINDEX = "hybridrec.reindex"
ROLLBACK = "hybridrec.rollback"
RECORD_EVENTS = "hybridrec.record_events"
SNAPSHOT_PROFILES = "hybridrec.snapshot_profiles"
FLUSH_RECO_LOGS = "hybridrec.flush_reco_logs"
ATTRIBUTE_CLICKS = "hybridrec.attribute_clicks"
DRAIN_PROFILES = "hybridrec.drain_profiles"
PREFETCH = "hybridrec.prefetch_recommendations"
TRAIN = "hybridrec.train"
TRAIN_IF_DUE = "hybridrec.train_if_due"
PROMOTE_MODEL = "hybridrec.promote_model"
ROLLBACK_MODEL = "hybridrec.rollback_model"

QUEUE_EMBED = "embed"     # index_items, reindex: heavy, the encoder runs here
QUEUE_INDEX = "index"     # delete_items, rollback: light catalog writes that must not wait behind a reindex
QUEUE_EVENTS = "events"   # record_events: live traffic, never starved by catalog work
QUEUE_TRAIN = "train"     # train, promote and roll back collaborative models: minutes of CPU, on its own
ALL_QUEUES = (QUEUE_EMBED, QUEUE_INDEX, QUEUE_EVENTS, QUEUE_TRAIN)

ROUTES = {
    INDEX_ITEMS: QUEUE_EMBED,
    REINDEX: QUEUE_EMBED,
    DELETE_ITEMS: QUEUE_INDEX,
    ROLLBACK: QUEUE_INDEX,
    RECORD_EVENTS: QUEUE_EVENTS,
    SNAPSHOT_PROFILES: QUEUE_INDEX,
    FLUSH_RECO_LOGS: QUEUE_EVENTS,
    ATTRIBUTE_CLICKS: QUEUE_EVENTS,
    DRAIN_PROFILES: QUEUE_EVENTS,
    PREFETCH: QUEUE_EVENTS,
    TRAIN: QUEUE_TRAIN,
    TRAIN_IF_DUE: QUEUE_TRAIN,
    PROMOTE_MODEL: QUEUE_TRAIN,
    ROLLBACK_MODEL: QUEUE_TRAIN,
}
