// bcrypt work whose caller gave up never runs, and one client cannot fill the hashing queue:
// after a burst of sign-ins with short deadlines from one address, a real user is served.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code, type ConnectError } from "@connectrpc/connect";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { createServiceClient, metrics } from "@protomesh/platform";
import { type Mesh, startMesh, uniqueEmail } from "@protomesh/testkit";

const PASSWORD = "correct horse battery staple";
const QUEUE_PER_CLIENT = 20;

let mesh: Mesh;
let auth: ReturnType<typeof createServiceClient<typeof AuthService>>;
before(async () => {
  mesh = await startMesh({
    services: ["auth", "user"],
    gateway: false,
    env: {
      auth: {
        BCRYPT_THREADS: "1",
        HASH_QUEUE_PER_CLIENT: String(QUEUE_PER_CLIENT),
        SIGNIN_IP_FREE_FAILURES: "100000",
        SIGNIN_IP_MAX_FAILURES: "100000",
      },
    },
  });
  auth = createServiceClient(AuthService, mesh.addr("auth"));
});
after(async () => {
  auth?.close();
  await mesh?.stop();
});

/** bcrypt jobs run and skipped so far (this process runs one auth instance). */
async function hashes() {
  const metric = (await metrics.getSingleMetric("auth_password_hashes_total")?.get())?.values ?? [];
  const of = (outcome: string) => metric.find((v) => v.labels.outcome === outcome)?.value ?? 0;
  return { ran: of("run"), skipped: of("skipped") };
}

test("a burst of sign-ins that give up is never hashed, is bounded per client, and a real user is served after it", async () => {
  const email = uniqueEmail("real");
  await auth.signUp({ email, password: PASSWORD, displayName: "Rea" });
  const before = await hashes();

  const burst = 2 * QUEUE_PER_CLIENT;
  const codes = await Promise.all(
    Array.from({ length: burst }, () =>
      auth.signIn({ email: uniqueEmail("burst"), password: PASSWORD }, { timeoutMs: 1_500 }).then(
        () => "OK",
        (err: ConnectError) => Code[err.code],
      ),
    ),
  );
  const count = (code: string) => codes.filter((c) => c === code).length;
  assert.ok(count("ResourceExhausted") > 0, `bounded per client: ${codes.join(",")}`);
  assert.equal(count("OK"), 0);

  const { result } = await auth.signIn({ email, password: PASSWORD }, { timeoutMs: 10_000 });
  assert.equal(result.case, "tokens", "the real user signs in");

  const after = await hashes();
  const ran = after.ran - before.ran;
  const skipped = after.skipped - before.skipped;
  const queued = burst - count("ResourceExhausted");
  // Each queued job ran before its caller gave up or was dropped (the real user's ran too);
  // at ~1.5 s of patience and a hash every ~0.1-0.2 s, most of the burst was dropped unrun.
  assert.ok(ran + skipped <= queued + 1, JSON.stringify({ ran, skipped, queued }));
  assert.ok(
    skipped > 0 && ran < queued,
    `callers that gave up were not hashed: ${JSON.stringify({ ran, skipped, queued })}`,
  );
});
