/**
 * Just enough MIME to read what nodemailer sends (RFC 5322 headers, RFC 2047 encoded words,
 * multipart, quoted-printable and base64), so tests can assert on a mail's subject and text.
 * Bodies are handled as "binary strings" (one char per byte, latin1) until their charset is known.
 */

export interface ParsedMail {
  /** Lower-cased names, unfolded values, first occurrence wins. */
  headers: Record<string, string>;
  subject: string;
  /** The text/plain body (the first text/plain part of a multipart mail), with \n line ends. */
  text: string;
  messageId: string;
}

interface Entity {
  headers: Record<string, string>;
  body: string;
}

/** Parses a raw RFC 5322 message into the parts a test asserts on. */
export function parseMail(raw: Buffer): ParsedMail {
  const entity = parseEntity(raw.toString("latin1"));
  // SMTP ends the last line with CRLF before the final "."; that line break is transport, not text.
  entity.body = entity.body.replace(/\r?\n$/, "");
  return {
    headers: entity.headers,
    subject: decodeEncodedWords(entity.headers.subject ?? ""),
    text: (findTextPlain(entity) ?? "").replace(/\r\n/g, "\n"),
    messageId: entity.headers["message-id"] ?? "",
  };
}

function parseEntity(binary: string): Entity {
  const blank = /\r?\n\r?\n/.exec(binary);
  const head = blank ? binary.slice(0, blank.index) : binary;
  const body = blank ? binary.slice(blank.index + blank[0].length) : "";
  return { headers: parseHeaders(bytesToText(head, "utf-8")), body };
}

function parseHeaders(head: string): Record<string, string> {
  const headers: Record<string, string> = {};
  // Unfolding (RFC 5322 2.2.3) drops the line break before a continuation line and keeps its blank.
  for (const line of head.replace(/\r?\n(?=[ \t])/g, "").split(/\r?\n/)) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    headers[name] ??= line.slice(colon + 1).trim();
  }
  return headers;
}

const ENCODED_WORD = /=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=/g;
const ENCODED_RUN = /=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=(?:\s+=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=)*/g;

/** Decodes RFC 2047 encoded words (`=?UTF-8?Q?...?=`, `=?UTF-8?B?...?=`) in a header value. */
export function decodeEncodedWords(value: string): string {
  // Blanks between adjacent encoded words are not part of the text, and an encoder may split one
  // multi-byte character across two words, so a run is joined as bytes before it is decoded.
  return value.replace(ENCODED_RUN, (run) => {
    let text = "";
    let bytes = "";
    let charset = "";
    for (const [, wordCharset = "", encoding = "", payload = ""] of run.matchAll(ENCODED_WORD)) {
      const normalized = wordCharset.split("*")[0]?.toLowerCase() ?? "utf-8";
      if (normalized !== charset) {
        text += bytesToText(bytes, charset);
        bytes = "";
        charset = normalized;
      }
      bytes +=
        encoding.toUpperCase() === "B"
          ? Buffer.from(payload, "base64").toString("latin1")
          : decodeQuotedPrintableBytes(payload.replace(/_/g, " "));
    }
    return text + bytesToText(bytes, charset);
  });
}

function findTextPlain(entity: Entity): string | undefined {
  const { type, params } = parseContentType(entity.headers["content-type"] ?? "text/plain");
  if (type.startsWith("multipart/") && params.boundary) {
    for (const part of splitMultipart(entity.body, params.boundary)) {
      const text = findTextPlain(parseEntity(part));
      if (text !== undefined) return text;
    }
    return undefined;
  }
  const disposition = (entity.headers["content-disposition"] ?? "").toLowerCase();
  if (type !== "text/plain" || disposition.startsWith("attachment")) return undefined;
  const bytes = decodeTransferEncoding(entity.body, entity.headers["content-transfer-encoding"] ?? "7bit");
  return bytesToText(bytes, params.charset ?? "utf-8");
}

function parseContentType(value: string): { type: string; params: Record<string, string> } {
  const [type = "", ...rest] = value.split(";");
  const params: Record<string, string> = {};
  for (const param of rest) {
    const eq = param.indexOf("=");
    if (eq <= 0) continue;
    const raw = param.slice(eq + 1).trim();
    params[param.slice(0, eq).trim().toLowerCase()] = raw.startsWith('"') ? raw.slice(1, -1) : raw;
  }
  return { type: type.trim().toLowerCase(), params };
}

function splitMultipart(body: string, boundary: string): string[] {
  const parts: string[] = [];
  let current: string[] | undefined;
  // The line break before a delimiter belongs to the delimiter, so joining a part's lines is exact.
  for (const line of body.split(/\r?\n/)) {
    const trimmed = line.trimEnd();
    if (trimmed === `--${boundary}--`) break;
    if (trimmed === `--${boundary}`) {
      if (current) parts.push(current.join("\r\n"));
      current = [];
    } else {
      current?.push(line);
    }
  }
  if (current) parts.push(current.join("\r\n"));
  return parts;
}

function decodeTransferEncoding(body: string, encoding: string): string {
  switch (encoding.trim().toLowerCase()) {
    case "quoted-printable":
      // Soft line breaks (a trailing "=") only wrap long lines.
      return decodeQuotedPrintableBytes(body.replace(/[ \t]+(?=\r?\n)/g, "").replace(/=\r?\n/g, ""));
    case "base64":
      return Buffer.from(body.replace(/\s+/g, ""), "base64").toString("latin1");
    default:
      return body;
  }
}

function decodeQuotedPrintableBytes(value: string): string {
  return value.replace(/=([0-9A-Fa-f]{2})/g, (_, hex: string) =>
    String.fromCharCode(Number.parseInt(hex, 16)),
  );
}

function bytesToText(binary: string, charset: string): string {
  if (binary === "") return "";
  const bytes = Buffer.from(binary, "latin1");
  try {
    return new TextDecoder(charset || "utf-8").decode(bytes);
  } catch {
    // An unknown charset label: UTF-8 is the best guess for anything a test sends.
    return new TextDecoder("utf-8").decode(bytes);
  }
}
