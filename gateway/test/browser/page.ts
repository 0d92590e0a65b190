// The script of the page gateway/test/browser.test.ts opens in Chromium: a tiny chat app on the
// official browser client (@connectrpc/connect-web), bundled by the test with esbuild. It keeps
// each person's access token, renders the messages a Subscribe stream delivers into the page,
// and answers the test in plain values (a ConnectError does not cross page.evaluate).
import { type CallOptions, Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { ChatService } from "@protomesh/contracts/chat/v1/chat_pb";
import { RetryInfoSchema } from "@protomesh/contracts/google/rpc/error_details_pb";

export type Protocol = "connect" | "grpc-web";

/** What a failed call tells the page. */
export interface Failure {
  /** The name of its Code, e.g. "InvalidArgument". */
  code: string;
  message: string;
  /** From a google.rpc.RetryInfo detail, if the error carries one. */
  retryDelayMs: number | undefined;
  /** Responses a stream delivered before it failed. */
  received: number;
}

// The few DOM calls the page makes, typed here: the repository's TypeScript program has no DOM
// library (and should not get one: its globals would hide mistakes in Node code).
interface Element {
  textContent: string | null;
  dataset: Record<string, string>;
  append(child: Element): void;
}
const dom = (
  globalThis as unknown as {
    document: { getElementById(id: string): Element | null; createElement(tag: string): Element };
  }
).document;

let transport: Transport | undefined;
const tokens = new Map<string, string>();
const streams = new Map<string, AbortController>();

const via = () => {
  if (!transport) throw new Error("call use() first");
  return transport;
};
const auth = () => createClient(AuthService, via());
const chat = () => createClient(ChatService, via());

/** Call options as a signed-in person (none for ""), with an optional deadline. */
function as(email: string, timeoutMs?: number): CallOptions {
  const token = tokens.get(email);
  if (email && !token) throw new Error(`${email} has not signed in`);
  return {
    headers: token ? { authorization: `Bearer ${token}` } : {},
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
  };
}

/** The user id (`sub`) of an access token. */
const subjectOf = (token: string) =>
  String(JSON.parse(atob((token.split(".")[1] ?? "").replace(/-/g, "+").replace(/_/g, "/"))).sub);

function failure(err: unknown, received: number): Failure {
  const e = ConnectError.from(err);
  const retry = e.findDetails(RetryInfoSchema)[0]?.retryDelay;
  return {
    code: Code[e.code] ?? String(e.code),
    message: e.rawMessage,
    retryDelayMs: retry ? Number(retry.seconds) * 1000 + Math.round(retry.nanos / 1e6) : undefined,
    received,
  };
}

/** How a call failed, or undefined if it succeeded. */
async function failureOf(call: Promise<unknown>): Promise<Failure | undefined> {
  try {
    await call;
    return undefined;
  } catch (err) {
    return failure(err, 0);
  }
}

const sendMessage = (email: string, recipientId: string, text: string) =>
  chat().sendMessage(
    { to: { case: "recipientId", value: recipientId }, text, clientMessageId: crypto.randomUUID() },
    as(email),
  );

/** What the test calls through page.evaluate. */
export const app = {
  /** Talks to the gateway at baseUrl over this protocol from now on. */
  use(baseUrl: string, protocol: Protocol): void {
    transport =
      protocol === "connect" ? createConnectTransport({ baseUrl }) : createGrpcWebTransport({ baseUrl });
  },

  /** Signs up and signs in; keeps the access token and answers the user id. */
  async join(email: string, password: string, displayName: string): Promise<string> {
    await auth().signUp({ email, password, displayName });
    const { result } = await auth().signIn({ email, password });
    if (result.case !== "tokens") throw new Error(`sign-in answered ${result.case}`);
    tokens.set(email, result.value.accessToken);
    return subjectOf(result.value.accessToken);
  },

  /**
   * Opens the person's Subscribe and resolves once it is live (its first heartbeat); from then
   * on each message it delivers is rendered as an item of #inbox.
   */
  async subscribe(email: string): Promise<void> {
    const stop = new AbortController();
    streams.set(email, stop);
    const events = chat()
      .subscribe({}, { ...as(email), signal: stop.signal })
      [Symbol.asyncIterator]();
    for (;;) {
      const first = await events.next();
      if (first.done) throw new Error("Subscribe ended before its first heartbeat");
      if (first.value.event.case === "heartbeat") break;
    }
    const inbox = dom.getElementById("inbox");
    if (!inbox) throw new Error("the page has no #inbox");
    void (async () => {
      try {
        for (let e = await events.next(); !e.done; e = await events.next()) {
          if (e.value.event.case !== "message") continue;
          const item = dom.createElement("li");
          item.dataset.to = email;
          item.textContent = e.value.event.value.text;
          inbox.append(item);
        }
      } catch {
        // Closed by unsubscribe(), or the test fails for want of the message.
      }
    })();
  },

  /** Ends the person's Subscribe. */
  unsubscribe(email: string): void {
    streams.get(email)?.abort();
    streams.delete(email);
  },

  /** Sends a text and answers it as the gateway returned it. */
  async send(email: string, recipientId: string, text: string): Promise<string> {
    return (await sendMessage(email, recipientId, text)).message?.text ?? "";
  },

  /** How SendMessage fails, as email ("" for no token). */
  sendFailure: (email: string, recipientId: string, text: string) =>
    failureOf(sendMessage(email, recipientId, text)),

  /** How ResendVerification fails for email. */
  resendFailure: (email: string) => failureOf(auth().resendVerification({}, as(email))),

  /** How a Subscribe with this deadline ends, and how much it delivered first. */
  async subscribeFailure(email: string, timeoutMs: number): Promise<Failure | undefined> {
    let received = 0;
    try {
      for await (const _ of chat().subscribe({}, as(email, timeoutMs))) received++;
      return undefined;
    } catch (err) {
      return failure(err, received);
    }
  },
};

export type App = typeof app;

(globalThis as unknown as { app: App }).app = app;
