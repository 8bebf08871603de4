"""The processes app's side of workflows.process_links: the link table and who holds a subscription."""

from __future__ import annotations

from processes.models import ProcessSubscription
from processes.startable import holding_processes_of, holds


class Links:
    def link(self, process_id: str, subscription_id: str) -> None:
        ProcessSubscription.objects.get_or_create(process_id=process_id, subscription_id=subscription_id)

    def other_holders(self, subscription_id: str, process_id: str) -> list[str]:
        return [holder.describe() for holder in holding_processes_of(subscription_id)
                if str(holder.process_id) != process_id and holds(holder)]
