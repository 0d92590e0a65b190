// A real browser uses the gateway: Debian's Chromium opens a page served from another origin
// whose script (browser/page.ts, bundled here with esbuild) is a tiny chat app on the official
// browser client, @connectrpc/connect-web. Through the gateway, once over the Connect protocol
// and once over gRPC-web, two people sign up and in, one subscribes, the other sends, and the
// message shows up in the page; errors (with their details) and deadlines reach the page as the
// codes the contracts promise. Chromium's fetch, CORS and streaming are the point: what
// connect-node's clients do not exercise.
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer } from "node:http";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { type Mesh, rememberSecrets, startMesh, TEST_PASSWORD, uniqueEmail } from "@protomesh/testkit";
import { build } from "esbuild";
import { type Browser, chromium, type Page } from "playwright-core";
import type { App, Failure, Protocol } from "./browser/page.ts";

/** The page's app, bundled for the browser, on a port of its own: another origin than the gateway's. */
async function servePage() {
  const bundle = await build({
    entryPoints: [join(import.meta.dirname, "browser/page.ts")],
    bundle: true,
    write: false,
    format: "esm",
    platform: "browser",
    logLevel: "silent",
  });
  const script = bundle.outputFiles[0]?.contents;
  assert.ok(script, "esbuild produced no bundle");
  const html =
    '<!doctype html><meta charset="utf-8"><ol id="inbox"></ol><script type="module" src="/app.js"></script>';
  const server = createServer((req, res) => {
    if (req.url === "/app.js") res.writeHead(200, { "content-type": "text/javascript" }).end(script);
    else res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  assert.ok(address && typeof address === "object");
  return {
    origin: `http://127.0.0.1:${address.port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

type Method = keyof App;

/** Runs one of the page app's methods in the page; arguments and result cross as plain values. */
const inPage = <M extends Method>(page: Page, method: M, ...args: Parameters<App[M]>) =>
  page.evaluate(
    // Serialised into the page as source: it must not close over anything.
    ([m, a]) => (globalThis as unknown as { app: Record<Method, (...x: unknown[]) => unknown> }).app[m](...a),
    [method, args] as [Method, unknown[]],
  ) as Promise<Awaited<ReturnType<App[M]>>>;

/** Fails unless the page saw this code; returns the failure for more checks. */
function assertFailure(failure: Failure | undefined, code: Code): Failure {
  assert.ok(failure, `expected ${Code[code]}, the call succeeded`);
  assert.equal(failure.code, Code[code], `expected ${Code[code]}, got ${failure.code}: ${failure.message}`);
  return failure;
}

const TEXT = "héllo 🌍 世界";

let site: Awaited<ReturnType<typeof servePage>> | undefined;
let mesh: Mesh | undefined;
let browser: Browser | undefined;

before(async () => {
  site = await servePage();
  // Only the page's origin: a missing CORS header would fail the calls as any browser would.
  mesh = await startMesh({
    services: ["auth", "user", "otp", "chat"],
    gatewayEnv: { CORS_ORIGINS: site.origin },
  });
  // After the mesh: the file it is kept in lives in the log folder its loggers make.
  rememberSecrets(TEST_PASSWORD);
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--headless"],
  });
});

after(async () => {
  await browser?.close();
  await mesh?.stop();
  await site?.close();
});

for (const protocol of ["connect", "grpc-web"] satisfies Protocol[]) {
  describe(`connect-web in Chromium, ${protocol}`, () => {
    let page: Page;
    const person = async () => {
      const email = uniqueEmail("browser");
      return { email, userId: await inPage(page, "join", email, TEST_PASSWORD, "Ada Ünïcode") };
    };
    let ada: Awaited<ReturnType<typeof person>>;
    let bob: Awaited<ReturnType<typeof person>>;

    before(async () => {
      assert.ok(browser && mesh && site);
      page = await browser.newPage();
      await page.goto(site.origin);
      await inPage(page, "use", mesh.url, protocol);
      [ada, bob] = await Promise.all([person(), person()]);
    });
    after(() => page?.close());

    test("a message one person sends reaches the other's open Subscribe and shows in the page", async () => {
      await inPage(page, "subscribe", ada.email);
      try {
        assert.equal(await inPage(page, "send", bob.email, ada.userId, TEXT), TEXT);
        const inbox = page.locator(`#inbox li[data-to="${ada.email}"]`);
        await inbox.first().waitFor({ timeout: 5_000 });
        assert.deepEqual(await inbox.allTextContents(), [TEXT]);
      } finally {
        await inPage(page, "unsubscribe", ada.email);
      }
    });

    test("an empty message fails with InvalidArgument naming the field", async () => {
      const failure = assertFailure(
        await inPage(page, "sendFailure", bob.email, ada.userId, ""),
        Code.InvalidArgument,
      );
      assert.match(failure.message, /^text: /);
    });

    test("a call without an access token fails with Unauthenticated", async () => {
      assertFailure(await inPage(page, "sendFailure", "", ada.userId, TEXT), Code.Unauthenticated);
    });

    test("an error's details reach the page: a resend right after sign-up carries RetryInfo", async () => {
      const failure = assertFailure(await inPage(page, "resendFailure", bob.email), Code.ResourceExhausted);
      assert.ok((failure.retryDelayMs ?? 0) > 0, `no RetryInfo detail: ${JSON.stringify(failure)}`);
    });

    test("a Subscribe with a deadline delivers, then ends with DeadlineExceeded", async () => {
      const failure = assertFailure(
        await inPage(page, "subscribeFailure", ada.email, 500),
        Code.DeadlineExceeded,
      );
      assert.ok(failure.received >= 1, "the stream ended before its first heartbeat");
    });
  });
}
