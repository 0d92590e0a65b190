// otp over real gRPC with mesh credentials, on real PostgreSQL and NATS JetStream: codes reach
// the outside only in OtpIssued events, and every limit holds under concurrency.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { type OtpIssued, OtpIssuedSchema } from "@protomesh/contracts/otp/v1/events_pb";
import {
  Channel,
  type IssueRequest,
  OtpService,
  Purpose,
  VerifyResult,
} from "@protomesh/contracts/otp/v1/otp_pb";
import { createMeshCredentials, createServiceClient } from "@protomesh/platform";
import { type Mesh, startMesh, waitUntil } from "@protomesh/testkit";
import { connect, type NatsConnection } from "nats";

type Otp = ReturnType<typeof createServiceClient<typeof OtpService>>;

/** Collects every OtpIssued published on a mesh's NATS, as notify would receive it. */
async function watchCodes(natsUrl: string) {
  const nc = await connect({ servers: natsUrl });
  const seen: OtpIssued[] = [];
  const sub = nc.subscribe("otp.code.issued");
  void (async () => {
    for await (const m of sub) seen.push(fromBinary(OtpIssuedSchema, m.data));
  })();
  await nc.flush();
  return { nc, seen };
}

let mesh: Mesh;
let otp: Otp;
let nc: NatsConnection;
let seen: OtpIssued[];

before(async () => {
  // No cooldown here, so a test can ask for a second code at once; the cooldown has its own replica.
  mesh = await startMesh({ services: ["otp"], gateway: false, env: { otp: { OTP_RESEND_COOLDOWN_S: "0" } } });
  otp = createServiceClient(OtpService, mesh.addr("otp"), {
    mesh: createMeshCredentials(mesh.env.otp.MESH_SECRET as string, "auth"),
  });
  ({ nc, seen } = await watchCodes(mesh.nats.url));
});
after(async () => {
  otp?.close();
  await nc?.close();
  await mesh?.stop();
});

const emailRequest = (subject: string = randomUUID()) => ({
  subject,
  purpose: Purpose.VERIFY_EMAIL,
  channel: Channel.EMAIL,
  destination: `${subject}@example.com`,
  userId: subject,
});

/** Issues a code and returns it as notify would receive it. */
async function issue(client: Otp, req: Partial<IssueRequest> & { subject: string }) {
  const full = { ...emailRequest(req.subject), ...req };
  const before = new Set(seen);
  const res = await client.issue(full);
  const event = await waitUntil(
    () => seen.find((e) => !before.has(e) && e.subject === full.subject && e.purpose === full.purpose),
    10_000,
    "OtpIssued event",
  );
  return { res, event, code: event.code };
}

const wrongCode = (code: string) => String((Number(code) + 1) % 1_000_000).padStart(6, "0");

describe("issue and verify", () => {
  test("a code works once: VERIFIED, then NO_CODE", async () => {
    const subject = randomUUID();
    const { res, event, code } = await issue(otp, { subject });
    assert.match(code, /^\d{6}$/);
    assert.equal(event.destination, `${subject}@example.com`);
    assert.equal(event.userId, subject);
    assert.ok(res.expireTime && res.resendTime);
    const expiresIn = timestampDate(res.expireTime).getTime() - Date.now();
    assert.ok(expiresIn > 590_000 && expiresIn <= 600_000, `lives 10 minutes, got ${expiresIn} ms`);
    const first = await otp.verify({ subject, purpose: Purpose.VERIFY_EMAIL, code });
    assert.equal(first.result, VerifyResult.VERIFIED);
    const second = await otp.verify({ subject, purpose: Purpose.VERIFY_EMAIL, code });
    assert.equal(second.result, VerifyResult.NO_CODE);
  });

  test("a code for one purpose never verifies another", async () => {
    const subject = randomUUID();
    const { code } = await issue(otp, { subject });
    const other = await otp.verify({ subject, purpose: Purpose.SIGN_IN, code });
    assert.equal(other.result, VerifyResult.NO_CODE);
  });

  test("a wrong code says how many tries are left; after 5 the code is dead", async () => {
    const subject = randomUUID();
    const { code } = await issue(otp, { subject });
    for (let left = 4; left >= 0; left--) {
      const r = await otp.verify({ subject, purpose: Purpose.VERIFY_EMAIL, code: wrongCode(code) });
      assert.equal(r.result, VerifyResult.WRONG_CODE);
      assert.equal(r.attemptsLeft, left);
    }
    const dead = await otp.verify({ subject, purpose: Purpose.VERIFY_EMAIL, code });
    assert.equal(dead.result, VerifyResult.LOCKED);
  });
});
