"""Webhook pages: the list and a form to add one, a webhook with its delivery log and the
"send test event" button, one delivery with its attempts and payload."""

from __future__ import annotations

from pathlib import Path

from starlette.responses import Response
from starlette.routing import Route

from ..ui.pages import PageGroup, Visit
from ..ui.web import see_other
from .payloads import EVENT_KINDS, FORMATS
from .service import WebhookService

HERE = Path(__file__).parent


class WebhookPages(PageGroup):
    nav = (("webhooks", "/ui/webhooks", "Webhooks"),)
    template_dir = HERE / "templates"
    done = {
        "webhook-test": "Test event queued: it appears in the delivery log once sent.",
        "webhook-deleted": "Webhook deleted.",
        "webhook-enabled": "Webhook switched on.",
        "webhook-disabled": "Webhook switched off: nothing is sent until it is on again.",
        "webhook-redelivered": "Queued again, as a new delivery.",
    }

    def __init__(self, ui: object, service: WebhookService) -> None:
        super().__init__(ui)  # type: ignore[arg-type]
        self.service = service

    def routes(self) -> list[Route]:
        get, post = ["GET", "HEAD"], ["POST"]
        hook = "/ui/webhooks/{webhook_id:int}"
        return [
            Route("/ui/webhooks", self.page(self.list_page), methods=get),
            Route("/ui/webhooks", self.page(self.create), methods=post),
            Route(hook, self.page(self.hook_page), methods=get),
            Route(hook + "/test", self.page(self.test), methods=post),
            Route(hook + "/toggle", self.page(self.toggle), methods=post),
            Route(hook + "/delete", self.page(self.delete), methods=post),
            Route(
                hook + "/deliveries/{delivery_id:int}", self.page(self.delivery_page), methods=get
            ),
            Route(
                hook + "/deliveries/{delivery_id:int}/redeliver",
                self.page(self.redeliver),
                methods=post,
            ),
        ]

    async def list_page(self, visit: Visit) -> Response:
        target = visit.request.query_params.get("target", "").strip()[:255]
        page = await self._service(
            self.service.list_webhooks(visit.caller, target or None, limit=200)
        )
        return self.render(
            visit,
            "webhooks.html",
            section="webhooks",
            hooks=page.items,
            target=target,
            form={
                "target": target,
                "url": "",
                "description": "",
                "events": ["push"],
                "format": "distribution",
            },
            error="",
            kinds=EVENT_KINDS,
            formats=FORMATS,
        )

    async def create(self, visit: Visit) -> Response:
        f = visit.form
        events = [k for k in EVENT_KINDS if f.get(f"event_{k}")]
        form: dict[str, object] = {
            "target": f.get("target", "").strip(),
            "url": f.get("url", "").strip(),
            "events": events,
            "format": f.get("format", "distribution"),
            "description": f.get("description", ""),
        }
        hook = await self._change(
            self.service.create(
                visit.caller,
                str(form["target"]),
                str(form["url"]),
                events,
                str(form["format"]),
                f.get("secret", "").strip() or None,
                str(form["description"]),
            )
        )
        # A generated secret is on this page only (no redirect to a page that shows it).
        return await self._hook_view(visit, hook.id, secret=hook.secret)

    async def hook_page(self, visit: Visit) -> Response:
        return await self._hook_view(visit, visit.request.path_params["webhook_id"])

    async def _hook_view(
        self, visit: Visit, webhook_id: int, secret: str | None = None
    ) -> Response:
        hook = await self._service(self.service.get(visit.caller, webhook_id))
        cursor = visit.request.query_params.get("before") or None
        deliveries = await self._service(
            self.service.deliveries(visit.caller, webhook_id, cursor, limit=50)
        )
        return self.render(
            visit,
            "webhook.html",
            section="webhooks",
            hook=hook,
            deliveries=deliveries.items,
            next_before=deliveries.next_cursor,
            first_page=cursor is None,
            secret=secret,
        )

    async def test(self, visit: Visit) -> Response:
        wid = visit.request.path_params["webhook_id"]
        await self._change(self.service.test(visit.caller, wid))
        return see_other(f"/ui/webhooks/{wid}?done=webhook-test")

    async def toggle(self, visit: Visit) -> Response:
        wid = visit.request.path_params["webhook_id"]
        on = visit.form.get("enabled") == "true"
        await self._change(self.service.update(visit.caller, wid, enabled=on))
        return see_other(f"/ui/webhooks/{wid}?done=webhook-{'enabled' if on else 'disabled'}")

    async def delete(self, visit: Visit) -> Response:
        await self._change(
            self.service.delete(visit.caller, visit.request.path_params["webhook_id"])
        )
        return see_other("/ui/webhooks?done=webhook-deleted")

    async def delivery_page(self, visit: Visit) -> Response:
        p = visit.request.path_params
        hook = await self._service(self.service.get(visit.caller, p["webhook_id"]))
        delivery = await self._service(
            self.service.delivery(visit.caller, p["webhook_id"], p["delivery_id"])
        )
        return self.render(
            visit, "webhook_delivery.html", section="webhooks", hook=hook, delivery=delivery
        )

    async def redeliver(self, visit: Visit) -> Response:
        p = visit.request.path_params
        await self._change(self.service.redeliver(visit.caller, p["webhook_id"], p["delivery_id"]))
        return see_other(f"/ui/webhooks/{p['webhook_id']}?done=webhook-redelivered")
