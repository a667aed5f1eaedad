"""Small build fixes for the minBERT book (loaded via `sphinx: local_extensions` in _config.yml).

Sphinx 7.4 lists an inline script twice when an extension adds it after the builder starts
(`app.add_js_file(None, body=...)` is stored once as filename None, then again as ''):
sphinx-thebe's `const THEBE_JS_URL = ...` is then declared twice and every page logs
"Identifier 'THEBE_JS_URL' has already been declared". We drop the duplicates per page;
tests/test_book.py fails on any console error, so it notices if this stops working.
"""


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        filename = getattr(js, "filename", js) or ""
        attributes = tuple(sorted(getattr(js, "attributes", {}).items()))
        key = (str(filename), attributes)
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _dedupe_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
