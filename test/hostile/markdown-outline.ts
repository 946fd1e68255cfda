/**
 * The block structure of a markdown document, as far as the pack-spoofing tests need it: which lines a
 * CommonMark reader takes as headings (ATX, indented up to three spaces, and setext), which lines open
 * an HTML block, and whether a fenced code block is left open at the end. Lines inside fenced code blocks
 * are text. Deliberately stricter than CommonMark where that is simpler (any `-`/`=` line under a text
 * line counts as a setext underline, any `<` at a line start as an HTML block), so a pass means more.
 */
export interface Outline {
  /** Headings in order, as `<level hashes> <text>` (setext ones too: `=` is level 1, `-` level 2). */
  headings: string[];
  /** Lines outside code blocks that would open an HTML block. */
  htmlStarts: string[];
  /** The fence of a code block still open at the end, or null. */
  openFence: string | null;
}

export function outline(markdown: string): Outline {
  const headings: string[] = [];
  const htmlStarts: string[] = [];
  let fence: { char: string; length: number; line: string } | null = null;
  let previousText: string | null = null;
  // CommonMark line endings: LF, CR LF and a lone CR.
  for (const line of markdown.split(/\r\n|\r|\n/)) {
    if (fence) {
      const close = /^ {0,3}(`{3,}|~{3,})[ \t]*$/.exec(line);
      if (close && close[1]![0] === fence.char && close[1]!.length >= fence.length) fence = null;
      continue;
    }
    const open = /^ {0,3}(`{3,}|~{3,})(.*)$/.exec(line);
    if (open && !(open[1]![0] === "`" && open[2]!.includes("`"))) {
      fence = { char: open[1]![0]!, length: open[1]!.length, line };
      previousText = null;
      continue;
    }
    if (/^[ \t]*$/.test(line)) {
      previousText = null;
      continue;
    }
    const atx = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/.exec(line);
    if (atx) {
      headings.push(`${atx[1]} ${atx[2] ?? ""}`.trimEnd());
      previousText = null;
      continue;
    }
    const setext = /^ {0,3}(=+|-+)[ \t]*$/.exec(line);
    if (setext && previousText !== null) {
      headings.push(`${setext[1]![0] === "=" ? "#" : "##"} ${previousText.trim()}`);
      previousText = null;
      continue;
    }
    if (/^ {0,3}</.test(line)) htmlStarts.push(line);
    // An indented line after text continues the paragraph; alone, it is indented code (no heading either way).
    previousText = previousText === null && /^(?: {4}|\t)/.test(line) ? null : line;
  }
  return { headings, htmlStarts, openFence: fence?.line ?? null };
}
