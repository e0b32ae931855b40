#!/usr/bin/python3
"""Man pages from the docs: sluice(8) from docs/sluice.8.md, sluice.toml(5) from
docs/configuration.md. One source for both, so the page an operator reads with `man` is the
reference on the web, word for word.

It understands the Markdown the docs use: ## and ### headings, paragraphs, `- ` lists, pipe
tables (the first column becomes the tag of a .TP paragraph, the others follow with their
column names), fenced code blocks, `code`, **bold**, *italic* and [links](target) (the text
stays; the target goes, unless it is a web address). Standard library only.

usage: manpages.py --version VERSION --out DIR DOCS_DIR"""

import argparse
import os
import re
import sys

PAGES = [
    # (file name, section, source, name line, title of the page header, SEE ALSO or None)
    ("sluice.8", "8", "sluice.8.md", r"sluice \- reverse proxy and WebSocket\-aware edge gateway",
     "System Administration", None),
    ("sluice.toml.5", "5", "configuration.md", r"sluice.toml \- sluice configuration file",
     "File Formats",
     "\\fBsluice\\fR(8); /usr/share/doc/sluice/examples/full.toml (every key, with a comment);"
     " /usr/share/doc/sluice/filters/ (each filter type's keys)."),
]

INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*|\*([^*\s][^*]*?)\*|\[([^\]]+)\]\(([^)]+)\)")


def escape(text):
    """roff-escapes plain text (no markup inside)."""
    text = text.replace("\\", "\\e")
    return text


def inline(text):
    """Markdown inline markup to roff fonts."""
    out = []
    pos = 0
    for m in INLINE.finditer(text):
        out.append(escape(text[pos:m.start()]))
        code, bold, italic, link_text, target = m.groups()
        if code is not None:
            out.append("\\fB" + escape(code).replace("-", "\\-") + "\\fR")
        elif bold is not None:
            out.append("\\fB" + inline(bold) + "\\fR")
        elif italic is not None:
            out.append("\\fI" + inline(italic) + "\\fR")
        else:
            out.append(inline(link_text))
            if target.startswith(("http://", "https://")) and target != link_text:
                out.append(" <" + escape(target) + ">")
        pos = m.end()
    out.append(escape(text[pos:]))
    return "".join(out)


def line(text):
    """One output line: a leading . or ' would be a roff request."""
    if text.startswith((".", "'")):
        return "\\&" + text
    return text


def cells(row):
    """A pipe table row's cells; a | inside `code` is not a separator."""
    row = row.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|"):
        row = row[:-1]
    out, cur, in_code = [], "", False
    for c in row:
        if c == "`":
            in_code = not in_code
        if c == "|" and not in_code:
            out.append(cur.strip())
            cur = ""
        else:
            cur += c
    out.append(cur.strip())
    return out


def convert(markdown):
    """The body of a page: everything after the first heading."""
    # <!-- comments --> are for the Markdown's readers only.
    markdown = re.sub(r"<!--.*?-->", "", markdown, flags=re.S)
    lines = markdown.splitlines()
    out = []
    i = 0
    # The # title and, for the reference, its table of contents (a list of links) are the web
    # page's; the man page has its own header. Other text before the first ## is the page's
    # DESCRIPTION.
    preamble, in_toc = [], False
    while i < len(lines) and not lines[i].startswith("## "):
        s = lines[i].strip()
        if s.startswith("- ["):
            in_toc = True  # the table of contents, up to the next blank line
        elif not s:
            in_toc = False
            preamble.append("")
        elif not in_toc and not s.startswith("# "):
            preamble.append(lines[i])
        i += 1
    if preamble and "".join(preamble).strip():
        lines[i:i] = ["## Description"] + preamble + [""]
    para = []

    def flush():
        if para:
            out.append(".PP")
            out.append(line(inline(" ".join(para))))
            para.clear()

    while i < len(lines):
        raw = lines[i]
        s = raw.strip()
        if s.startswith("```"):
            flush()
            out += [".PP", ".RS 4", ".nf"]
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                out.append(line(escape(lines[i]).replace("-", "\\-")))
                i += 1
            out += [".fi", ".RE"]
            i += 1
            continue
        if s.startswith("### "):
            flush()
            out.append(".SS \"" + inline(s[4:]).replace('"', "") + "\"")
        elif s.startswith("## "):
            flush()
            title = s[3:] if s[3:].startswith("`") else s[3:].upper()  # a key stays a key
            out.append(".SH \"" + inline(title).replace('"', "") + "\"")
        elif s.startswith("|"):
            flush()
            header = cells(s)
            i += 2  # the header and the |---| line
            while i < len(lines) and lines[i].strip().startswith("|"):
                row = cells(lines[i])
                out.append(".TP")
                out.append(line(inline(row[0])))
                extra = []
                for name, value in zip(header[1:-1], row[1:-1]):
                    extra.append(inline(name) + ": " + inline(value))
                text = inline(row[-1]) if len(row) > 1 else ""
                if extra:
                    text = "(" + "; ".join(extra) + ") " + text
                out.append(line(text))
                i += 1
            continue
        elif s.startswith("- "):
            flush()
            item = [s[2:]]
            i += 1
            while i < len(lines) and lines[i].startswith("  ") and lines[i].strip() and \
                    not lines[i].strip().startswith("- "):
                item.append(lines[i].strip())
                i += 1
            out.append(".IP \\(bu 2")
            out.append(line(inline(" ".join(item))))
            continue
        elif not s:
            flush()
        else:
            para.append(s)
        i += 1
    flush()
    return out


def page(name, section, source, name_line, title, see_also, version):
    with open(source, encoding="utf-8") as f:
        body = convert(f.read())
    if see_also:
        body += [".SH \"SEE ALSO\"", see_also]
    head = [
        '.\\" Generated by packaging/manpages.py from docs/%s; edit that file.' %
        os.path.basename(source),
        '.TH "%s" "%s" "" "sluice %s" "%s"' % (name.rsplit(".", 1)[0].upper(), section, version,
                                                title),
        ".SH NAME",
        name_line,
    ]
    return "\n".join(head + body) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("docs")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, section, source, name_line, title, see_also in PAGES:
        text = page(name, section, os.path.join(args.docs, source), name_line, title, see_also,
                    args.version)
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
