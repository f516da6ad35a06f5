"""Render a report's blocks as one self-contained HTML page or as Markdown.

A report is a list of blocks, each a dict with a ``type``:

- ``heading``: ``level`` (1-3) and ``text``;
- ``paragraph``: ``text``;
- ``list``: ``items`` (strings);
- ``table``: ``headers`` and ``rows`` (lists of strings);
- ``image``: ``path`` (a PNG file) and ``caption``.

The HTML page embeds every image as a base64 ``data:`` URI and its style
sheet inline, so it has no external references and opens offline. The
Markdown twin links the images by their path relative to the report.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Dict, Sequence, Union

PathLike = Union[str, Path]

STYLE = """
body { font-family: "Liberation Sans", Arial, Helvetica, sans-serif;
       margin: 2em auto; max-width: 1100px; color: #1a1a1a;
       background: #ffffff; line-height: 1.4; }
h1 { border-bottom: 3px solid #2a5d9f; padding-bottom: 0.2em; }
h2 { color: #2a5d9f; border-bottom: 1px solid #c8d3e0; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #b8c2cc; padding: 0.3em 0.6em; text-align: left;
         overflow-wrap: break-word; }
th { background: #e3ecf7; hyphens: none; }
td code { overflow-wrap: anywhere; }
tr:nth-child(even) td { background: #f5f8fb; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { font-size: 0.9em; color: #444444; }
"""


def render_html(blocks: Sequence[Dict[str, Any]], title: str) -> str:
    """Render blocks as a self-contained HTML page.

    Args:
        blocks: The report's blocks (see the module docstring).
        title: Page title.

    Returns:
        str: The HTML text, with images as base64 ``data:`` URIs.

    Raises:
        ValueError: If a block has an unknown type.
        FileNotFoundError: If an image block's file does not exist.

    Examples:
        >>> page = render_html([{'type': 'paragraph', 'text': 'a < b'}], 'T')
        >>> 'a &lt; b' in page
        True
    """
    parts = [
        '<!DOCTYPE html>',
        '<html lang="en">',
        '<head>',
        '<meta charset="utf-8">',
        f'<title>{html.escape(title)}</title>',
        f'<style>{STYLE}</style>',
        '</head>',
        '<body>',
    ]
    for block in blocks:
        parts.append(_html_block(block))
    parts += ['</body>', '</html>']
    return '\n'.join(parts) + '\n'


def render_markdown(blocks: Sequence[Dict[str, Any]],
                    base_dir: PathLike) -> str:
    """Render blocks as Markdown, linking images relative to ``base_dir``.

    Args:
        blocks: The report's blocks (see the module docstring).
        base_dir: Folder the Markdown file is written to.

    Returns:
        str: The Markdown text.

    Raises:
        ValueError: If a block has an unknown type.

    Examples:
        >>> render_markdown([{'type': 'heading', 'level': 1,
        ...                   'text': 'Report'}], '.')
        '# Report\\n'
    """
    parts = []
    for block in blocks:
        kind = block['type']
        if kind == 'heading':
            parts.append('#' * block['level'] + ' ' + block['text'])
        elif kind == 'paragraph':
            parts.append(block['text'])
        elif kind == 'list':
            parts.append('\n'.join(f'- {item}' for item in block['items']))
        elif kind == 'table':
            parts.append(_markdown_table(block['headers'], block['rows']))
        elif kind == 'image':
            relative = Path(block['path']).resolve().relative_to(
                Path(base_dir).resolve())
            parts.append(f'![{block["caption"]}]({relative.as_posix()})\n\n'
                         f'*{block["caption"]}*')
        else:
            raise ValueError(f'unknown block type {kind!r}.')
    return '\n\n'.join(parts) + '\n'


def _html_block(block: Dict[str, Any]) -> str:
    kind = block['type']
    if kind == 'heading':
        level = block['level']
        return f'<h{level}>{html.escape(block["text"])}</h{level}>'
    if kind == 'paragraph':
        return f'<p>{html.escape(block["text"])}</p>'
    if kind == 'list':
        items = ''.join(f'<li>{html.escape(item)}</li>'
                        for item in block['items'])
        return f'<ul>{items}</ul>'
    if kind == 'table':
        head = ''.join(f'<th>{html.escape(cell)}</th>'
                       for cell in block['headers'])
        body = ''.join(
            '<tr>' + ''.join(f'<td>{html.escape(cell)}</td>'
                             for cell in row) + '</tr>'
            for row in block['rows'])
        return (f'<table><thead><tr>{head}</tr></thead>'
                f'<tbody>{body}</tbody></table>')
    if kind == 'image':
        encoded = base64.b64encode(Path(block['path']).read_bytes()).decode()
        caption = html.escape(block['caption'])
        return (f'<figure><img alt="{caption}" '
                f'src="data:image/png;base64,{encoded}">'
                f'<figcaption>{caption}</figcaption></figure>')
    raise ValueError(f'unknown block type {kind!r}.')


def _markdown_table(headers: Sequence[str],
                    rows: Sequence[Sequence[str]]) -> str:
    def line(cells):
        escaped = [str(cell).replace('|', '\\|') for cell in cells]
        return '| ' + ' | '.join(escaped) + ' |'

    lines = [line(headers), '|' + '---|' * len(headers)]
    lines += [line(row) for row in rows]
    return '\n'.join(lines)
