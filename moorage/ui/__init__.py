"""The web UI: server-rendered pages (Jinja2, autoescaped) served by the registry itself.

Reading works with JavaScript off; ``static/ui.js`` only adds niceties (copy buttons, confirm
dialogs, filter-as-you-type). Every page goes through the same services as the REST API, so the
access rules live in one place.
"""
