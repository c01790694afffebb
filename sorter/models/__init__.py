"""Networks, pretrained and trained, each loaded lazily (:class:`~sorter.models.base.LazyModel`)."""
