// SearchUsers (USER) for finding chat contacts, and ListUsers (ADMIN) for operators: prefix
// search on public fields, filters, and cursor pages whose tokens only we can make.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import type { Pool } from "@protomesh/platform";
import { failure, type Mesh, query, startMesh } from "@protomesh/testkit";
import pg from "pg";
import { createPgUserStore } from "../src/pg-user-store.ts";
import { createProfile, meshUsers, signedIn, uniqueTag } from "./helpers.ts";

let mesh: Mesh;
let users: ReturnType<typeof meshUsers>;
let me: Awaited<ReturnType<typeof signedIn>>;
before(async () => {
  mesh = await startMesh({ services: ["auth", "user"] });
  users = meshUsers(mesh);
  me = await signedIn(mesh, "Searcher");
});
after(async () => {
  users?.close();
  await mesh?.stop();
});

/** Every profile a search finds, page by page, and how many pages it took. */
async function searchAll(q: string, pageSize: number) {
  const found = [];
  let pageToken = "";
  let pages = 0;
  do {
    const page = await me.users.searchUsers({ query: q, pageSize, pageToken });
    found.push(...page.profiles);
    pageToken = page.nextPageToken;
    pages++;
  } while (pageToken && pages < 50);
  return { found, pages };
}

describe("SearchUsers", () => {
  test("finds display names by case-insensitive prefix, ordered by name, with public fields only", async () => {
    const tag = uniqueTag();
    const bob = await createProfile(mesh, `${tag}bob`);
    const alice = await createProfile(mesh, `${tag.toUpperCase()} Alice`);
    const carol = await createProfile(mesh, `${tag}Carol`);
    await createProfile(mesh, `x${tag}`);
    await users.setRoles({ userId: bob.id, roles: ["user", "admin"] });

    const res = await fetch(`${mesh.url}/protomesh.user.v1.UserService/SearchUsers`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${me.token}` },
      body: JSON.stringify({ query: tag.slice(0, 6).toUpperCase() }),
    });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { profiles: Record<string, unknown>[]; nextPageToken?: string };
    assert.deepEqual(
      body.profiles.map((p) => p.id),
      [alice.id, bob.id, carol.id],
      "a space sorts before letters; case is ignored",
    );
    for (const p of body.profiles) assert.deepEqual(Object.keys(p).sort(), ["displayName", "id"]);
    assert.doesNotMatch(JSON.stringify(body), /@example\.com|admin|roles|phone/);
    assert.equal(body.nextPageToken, undefined, "one page holds them all");
  });

  test("pages through every match exactly once, in order, with opaque tokens", async () => {
    const tag = uniqueTag();
    // Equal names are ordered by id, so pages never skip or repeat one of them.
    const made = [];
    for (const name of ["Sam", "Sam", "Sam", "sam", "Sammy", "Samuel", "Sa"]) {
      made.push(await createProfile(mesh, `${tag}${name}`));
    }
    const { found, pages } = await searchAll(tag, 2);
    assert.equal(pages, 4);
    const expected = made
      .map((u) => ({ id: u.id, key: u.displayName.toLowerCase() }))
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.id < b.id ? -1 : 1))
      .map((u) => u.id);
    assert.deepEqual(
      found.map((p) => p.id),
      expected,
    );
    assert.deepEqual(
      (await searchAll(`${tag}samm`, 20)).found.map((p) => p.displayName),
      [`${tag}Sammy`],
    );
  });

  test("a 64-character name in every script pages within the contract's token size", async () => {
    const tag = uniqueTag();
    const longest = `${tag}${"𝔸".repeat(56)}`; // 4 bytes each in UTF-8
    await createProfile(mesh, longest);
    await createProfile(mesh, longest);
    const { found, pages } = await searchAll(tag, 1);
    assert.equal(found.length, 2);
    assert.equal(pages, 2);
  });

  test("LIKE wildcards in the query match only themselves", async () => {
    const tag = uniqueTag();
    const percent = await createProfile(mesh, `${tag}a%b`);
    const under = await createProfile(mesh, `${tag}a_c`);
    const slash = await createProfile(mesh, `${tag}a\\d`);
    await createProfile(mesh, `${tag}axe`);
    const ids = async (q: string) => (await searchAll(q, 50)).found.map((p) => p.id);
    assert.deepEqual(await ids(`${tag}a%`), [percent.id]);
    assert.deepEqual(await ids(`${tag}a_`), [under.id]);
    assert.deepEqual(await ids(`${tag}a\\`), [slash.id]);
    assert.deepEqual(await ids("%"), [], "a lone % matches no one here");
  });

  test("a page token we did not issue, or issued for another query, is INVALID_ARGUMENT", async () => {
    const tag = uniqueTag();
    for (let i = 0; i < 3; i++) await createProfile(mesh, `${tag}Kim`);
    const { nextPageToken } = await me.users.searchUsers({ query: tag, pageSize: 1 });
    assert.ok(nextPageToken);
    const flipped = `${nextPageToken.slice(0, 5)}${nextPageToken[5] === "A" ? "B" : "A"}${nextPageToken.slice(6)}`;
    for (const [q, pageToken] of [
      [tag, "bm90LWEtdG9rZW4"],
      [tag, "not a token!"],
      [tag, flipped],
      [tag, `${nextPageToken}AA`],
      [`${tag}k`, nextPageToken],
    ] as const) {
      const err = await failure(me.users.searchUsers({ query: q, pageSize: 1, pageToken }));
      assert.equal(err.code, Code.InvalidArgument, pageToken);
      assert.match(err.rawMessage, /^page_token: /);
    }
    const second = await me.users.searchUsers({ query: tag, pageSize: 1, pageToken: nextPageToken });
    assert.equal(second.profiles.length, 1, "the real token still works");
  });

  test("needs a signed-in user and a query of 1 to 64 characters", async () => {
    const anonymous = await fetch(`${mesh.url}/protomesh.user.v1.UserService/SearchUsers`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ query: "a" }),
    });
    assert.equal(anonymous.status, 401);
    for (const [req, field] of [
      [{ query: "" }, "query"],
      [{ query: "a".repeat(65) }, "query"],
      [{ query: "a", pageSize: 51 }, "page_size"],
      [{ query: "a", pageSize: -1 }, "page_size"],
    ] as const) {
      const err = await failure(me.users.searchUsers(req));
      assert.equal(err.code, Code.InvalidArgument);
      assert.match(err.rawMessage, new RegExp(`^${field}: `));
    }
  });

  test("the prefix search and its next pages are one range of the users_search index, unsorted", async () => {
    // The store's own SQL, explained instead of run, on a connection where the planner may not
    // scan the (tiny) table: the plan shows whether the index can serve the query.
    const pool = new pg.Pool({
      connectionString: mesh.env.user.DATABASE_URL,
      options: "-c enable_seqscan=off",
    });
    const plans: string[] = [];
    const explaining = {
      async query(sql: string, params: unknown[]) {
        const { rows } = await pool.query<{ "QUERY PLAN": string }>(`EXPLAIN ${sql}`, params);
        plans.push(rows.map((r) => r["QUERY PLAN"]).join("\n"));
        return { rows: [] };
      },
    } as unknown as Pool;
    try {
      const store = createPgUserStore(explaining);
      await store.search("Ab%", 20);
      await store.search("Ab%", 20, { key: "ab%c", id: crypto.randomUUID() });
    } finally {
      await pool.end();
    }
    for (const plan of plans) {
      assert.match(plan, /Index Scan using users_search/, plan);
      assert.match(plan, /Index Cond: .*>= 'ab%'.*< 'ab&'/, plan);
      assert.doesNotMatch(plan, /Sort/, plan);
    }
  });
});

describe("ListUsers", () => {
  test("lists full profiles newest first, filtered by role, in pages", async () => {
    const role = `r${uniqueTag()}`;
    const made = [];
    for (const name of ["First", "Second", "Third"]) {
      const u = await createProfile(mesh, name);
      await users.setRoles({ userId: u.id, roles: ["user", role] });
      made.push(u);
    }
    await createProfile(mesh, "Without the role");
    const first = await users.listUsers({ role, pageSize: 2 });
    assert.deepEqual(
      first.users.map((u) => u.displayName),
      ["Third", "Second"],
    );
    assert.equal(first.users[0]?.email, made[2]?.email, "full profiles, email included");
    assert.deepEqual(first.users[0]?.roles, ["user", role]);
    assert.ok(first.nextPageToken);
    const second = await users.listUsers({ role, pageSize: 2, pageToken: first.nextPageToken });
    assert.deepEqual(
      second.users.map((u) => u.displayName),
      ["First"],
    );
    assert.equal(second.nextPageToken, "");

    const other = await failure(users.listUsers({ role: `${role}x`, pageToken: first.nextPageToken }));
    assert.equal(other.code, Code.InvalidArgument, "a token is bound to its filters");
    assert.match(other.rawMessage, /^page_token: /);
  });

  test("filters by email, case-insensitively and exactly", async () => {
    const tag = uniqueTag();
    const ada = await createProfile(mesh, "Ada", `ada-${tag}@example.com`);
    await createProfile(mesh, "Ada's twin", `ada-${tag}x@example.com`);
    const { users: found } = await users.listUsers({ email: `ADA-${tag}@Example.com` });
    assert.deepEqual(
      found.map((u) => u.id),
      [ada.id],
    );
    assert.deepEqual((await users.listUsers({ email: `ada-${tag}@example.co` })).users, []);
    const bad = await failure(users.listUsers({ email: "not-an-email" }));
    assert.equal(bad.code, Code.InvalidArgument);
    assert.match(bad.rawMessage, /^email: /);
  });

  test("without a filter pages through everyone, newest first, each once", async () => {
    for (let i = 0; i < 5; i++) await createProfile(mesh, `Many ${i}`);
    const seen: string[] = [];
    const times: number[] = [];
    let pageToken = "";
    do {
      const page = await users.listUsers({ pageSize: 3, pageToken });
      for (const u of page.users) {
        seen.push(u.id);
        times.push(Number(u.createTime?.seconds) * 1e9 + (u.createTime?.nanos ?? 0));
      }
      pageToken = page.nextPageToken;
    } while (pageToken);
    const total = await query<{ n: string }>(
      mesh.env.user.DATABASE_URL ?? "",
      "SELECT count(*) AS n FROM users",
    );
    assert.equal(seen.length, Number(total[0]?.n));
    assert.equal(new Set(seen).size, seen.length, "no one twice");
    assert.deepEqual(
      times,
      [...times].sort((a, b) => b - a),
      "newest first",
    );
  });
});
