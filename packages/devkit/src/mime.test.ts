import assert from "node:assert/strict";
import { test } from "node:test";
import { decodeEncodedWords, parseMail } from "./mime.ts";

test("encoded words decode Q and B, join adjacent words and keep plain text around them", () => {
  assert.equal(decodeEncodedWords("=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus?= Berlin"), "Grüße aus Berlin");
  assert.equal(decodeEncodedWords("=?UTF-8?B?4pyT?= ok"), "✓ ok");
  // "ü" split across two words: only joining the bytes first gives the character back.
  assert.equal(decodeEncodedWords("=?UTF-8?Q?Gr=C3?=\r\n =?UTF-8?Q?=BC=C3=9Fe?="), "Grüße");
  assert.equal(decodeEncodedWords("=?ISO-8859-1?Q?Gr=FC=DFe?="), "Grüße");
});

test("folded headers unfold and a quoted-printable body loses its soft line breaks", () => {
  const raw = [
    "Subject: =?UTF-8?Q?a_long?=",
    " =?UTF-8?Q?_subject?=",
    "X-Note: first",
    "\tsecond",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: quoted-printable",
    "",
    "K=C3=A4se und =",
    "Brot=3D gut",
    "",
  ].join("\r\n");
  const mail = parseMail(Buffer.from(raw, "latin1"));
  assert.equal(mail.subject, "a long subject");
  assert.equal(mail.headers["x-note"], "first\tsecond");
  assert.equal(mail.text, "Käse und Brot= gut");
});
