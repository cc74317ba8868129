"""The login page: a form, no script, served by the gateway."""

from __future__ import annotations

from html import escape


def render(gateway_id: str, error: str = "") -> str:
    message = f'<p class="error">{escape(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge-twin {escape(gateway_id)}: log in</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem auto;max-width:22rem;color:#1d2430}}
label{{display:block;margin:.8rem 0 .2rem}} input{{width:100%;padding:.5rem;font-size:1rem}}
button{{margin-top:1rem;padding:.6rem 1.2rem;font-size:1rem}} .error{{color:#8a1c14}}
</style></head><body>
<h1>edge-twin {escape(gateway_id)}</h1>
{message}
<form method="post" action="/login">
<label for="username">User</label>
<input id="username" name="username" autocomplete="username" required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Log in</button>
</form></body></html>
"""
