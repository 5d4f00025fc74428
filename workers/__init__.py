"""hybridrec's Celery workers: embed and index items, rebuild indices, record events."""
