// Drives Igris's proxy with the official MCP TypeScript SDK client (Client +
// StreamableHTTPClientTransport), for tests/functions/proxy/test_proxy_typescript.py.
//
// Environment: MCP_SDK_DIR (the SDK's dist/esm folder, installed under tests/compat),
// PROXY_URL (`<base>/proxy/<slug>`), API_KEY, and optionally PHI_URL + PHI_API_KEY (a server
// whose data classes include "phi" and that no BAA covers).
//
// Mid-run it prints `WAIT suspend <sessionId>` and `WAIT resume <sessionId>` and reads one
// line from stdin before going on, so that the test can flip the kill switch in between.
// The last line of stdout is `RESULT <json summary>`.

import path from "node:path";
import readline from "node:readline";
import { pathToFileURL } from "node:url";

const sdk = (relative) => import(pathToFileURL(path.join(process.env.MCP_SDK_DIR, relative)).href);
const { Client } = await sdk("client/index.js");
const { StreamableHTTPClientTransport } = await sdk("client/streamableHttp.js");
const { McpError } = await sdk("types.js");

const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function pause(what, sessionId) {
  process.stdout.write(`WAIT ${what} ${sessionId}\n`);
  const answer = await lines.next();
  if (answer.done) throw new Error(`stdin closed while waiting for ${what}`);
}

async function connect(url, key) {
  const client = new Client({ name: "igris-ts-compat", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${key}`, "X-Igris-User": "ts-agent" } },
  });
  await client.connect(transport);
  return { client, transport };
}

function textOf(result) {
  return result.content.filter((item) => item.type === "text").map((item) => item.text).join("");
}

// A call's outcome as plain JSON: the result, or the JSON-RPC error the SDK threw.
async function call(client, name, args) {
  try {
    const result = await client.callTool({ name, arguments: args });
    return { ok: true, text: textOf(result), isError: Boolean(result.isError) };
  } catch (error) {
    if (!(error instanceof McpError)) throw error;
    return { ok: false, code: error.code, message: error.message, data: error.data ?? null };
  }
}

const summary = {};
const { client, transport } = await connect(process.env.PROXY_URL, process.env.API_KEY);
summary.serverName = client.getServerVersion()?.name ?? null;
summary.protocolVersion = transport.protocolVersion ?? null;
summary.mcpSessionId = transport.sessionId ?? null;
summary.tools = (await client.listTools()).tools.map((tool) => tool.name).sort();
summary.allowed = await call(client, "read_data", { key: "ts-key" });
summary.alerted = await call(client, "write_record", { table: "notes", value: "from-ts" });
summary.denied = await call(client, "delete_users", { ids: [7] });
summary.limited = [];
for (const text of ["e1", "e2", "e3"]) summary.limited.push(await call(client, "echo", { text }));
summary.approval = await call(client, "drop_table", { name: "audit" });
summary.approvalAgain = await call(client, "drop_table", { name: "audit" });

const sessionId = summary.denied.data?.sessionId;
await pause("suspend", sessionId);
summary.suspended = await call(client, "read_data", { key: "while-suspended" });
await pause("resume", sessionId);
summary.resumed = await call(client, "read_data", { key: "after-resume" });
await transport.terminateSession();
await client.close();

if (process.env.PHI_URL) {
  const phi = await connect(process.env.PHI_URL, process.env.PHI_API_KEY);
  summary.phi = await call(phi.client, "get_patient", { patient_id: "p-1" });
  await phi.client.close();
}

process.stdout.write(`RESULT ${JSON.stringify(summary)}\n`);
process.exit(0);
