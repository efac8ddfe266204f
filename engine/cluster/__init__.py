"""Scale-out of a command's work items: in this process, or on Ray actors (the optional
``cluster`` extra) that load the model once and stream results back to the driver, which alone
writes files. See ``docs/CLUSTER.md``.

:class:`ClusterSpec` says where; a :class:`WorkerJob` says what one worker does; :func:`map_items`
runs the items and yields one :class:`ItemOutcome` per item; :func:`in_item_order` re-yields
them by index, for drivers that append results to files; :func:`cluster_session` keeps one Ray
instance up across several ``map_items`` calls.
"""

from engine.cluster.items import ItemOutcome, WorkerJob, one_line
from engine.cluster.mapping import cluster_session, in_item_order, map_items
from engine.cluster.spec import RAY_MISSING, ClusterSpec, ray_available

__all__ = ["RAY_MISSING", "ClusterSpec", "ItemOutcome", "WorkerJob", "cluster_session", "in_item_order", "map_items",
           "one_line", "ray_available"]
