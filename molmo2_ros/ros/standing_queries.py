"""The node's standing queries, with the query parameters as their source of truth: `queries` (shared) and
`<camera>.queries` (a camera's own list). ManageQueries edits them by setting those parameters; the node's
parameter callback then applies the change to the runtime's streams and the output publishers, so the
parameters always show what runs and there is one code path for both.
"""

from __future__ import annotations

from rclpy.parameter import Parameter

from molmo2_ros.core.queries import dump_queries, parse_queries, query_changes
from molmo2_ros.core.settings import camera_queries
from molmo2_ros.core.types import Query


class StandingQueries:
    """Standing queries of a Molmo2Node (`cameras`, `runtime`, `lifecycle_state`, its parameters). Called from the
    parameter callback and the ManageQueries service (rclpy serialises parameter changes)."""

    def __init__(self, node) -> None:
        self.node = node

    def listed(self, camera: str) -> list[Query]:
        """The queries ManageQueries edits for `camera` ("" = the shared list); ValueError for an unknown camera or
        one that uses the shared list."""
        node = self.node
        if camera and camera not in node.cameras:
            raise ValueError(f"unknown camera '{camera}' (cameras: {', '.join(c for c in node.cameras if c)})")
        name = f"{camera}.queries" if camera else "queries"
        if camera and not node.get_parameter(name).value.strip():
            raise ValueError(f"camera '{camera}' uses the shared queries: manage them with an empty camera field")
        return parse_queries(node.get_parameter(name).value, node.get_parameter("max_query_chars").value, name)

    def set(self, camera: str, queries: list[Query]) -> str:
        """Set the query parameter of `camera` ("" = shared); the parameter callback applies it. '' or why not."""
        if self.node.lifecycle_state == "unconfigured":
            return "the node is unconfigured: standing queries exist once it is configured"
        name = f"{camera}.queries" if camera else "queries"
        result = self.node.set_parameters([Parameter(name, value=dump_queries(queries))])[0]
        return "" if result.successful else result.reason

    def apply(self, values: dict, camera_values: dict[str, dict[str, object]], outputs: dict) -> str:
        """Make every camera's stream queries and publishers (`outputs`: camera -> CameraOutputs) match the query
        settings; '' or why not (nothing changes then)."""
        node = self.node
        try:
            desired = camera_queries(values, node.cameras, camera_values)
        except ValueError as error:
            return str(error)
        changes = {c: query_changes(node.runtime.streams[c].queries, queries) for c, queries in desired.items()}
        created = []
        try:
            for camera, (add, _) in changes.items():
                for query in add:
                    outputs[camera].add(query, node.lifecycle_state == "active")
                    created.append((camera, query.id))
        except Exception as error:  # noqa: BLE001 - e.g. an invalid topic name
            for camera, query_id in created:
                outputs[camera].remove(query_id)
            return f"cannot create the publishers of a query: {error}"
        for camera, (add, remove) in changes.items():
            stream = node.runtime.streams[camera]
            for query_id in remove:
                stream.remove_query(query_id)
                if query_id not in {q.id for q in add}:
                    outputs[camera].remove(query_id)
            for query in add:
                stream.add_query(query)
        return ""
