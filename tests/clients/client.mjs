// A test MCP client built on the official TypeScript SDK (StdioClientTransport).
//
//   node client.mjs COMMAND [ARG...]
//
// Starts COMMAND ARG... as a stdio MCP server the way every SDK-based client
// does: with the SDK's default environment (HOME, LOGNAME, PATH, SHELL, TERM,
// USER), plus only the variables named in $MCP_TEST_PASS_ENV (comma-separated),
// as a user would list them in a client's "env" setting.
//
// Connects (initialize), prints {"ok": true, "server": ...}, then reads one JSON
// request per line on stdin and prints one JSON line per answer:
//   {"op": "list"}                              -> {"ok": true, "tools": [names]}
//   {"op": "call", "name": N, "arguments": A}   -> {"ok": true, "result": CallToolResult}
// A failure prints {"ok": false, "error": {"code", "message"}}; a failed
// connect also exits 1. EOF on stdin closes the client (and the server).
// The server's stderr is passed through to ours.
import { createInterface } from 'node:readline';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';

const [command, ...args] = process.argv.slice(2);
if (!command) {
  process.stderr.write('usage: node client.mjs COMMAND [ARG...]\n');
  process.exit(2);
}
const env = {};
for (const name of (process.env.MCP_TEST_PASS_ENV ?? '').split(',').filter(Boolean)) {
  if (process.env[name] !== undefined) env[name] = process.env[name];
}

const print = (doc) => process.stdout.write(`${JSON.stringify(doc)}\n`);
const failure = (err) => ({ ok: false, error: { code: err?.code ?? null, message: String(err?.message ?? err) } });

const transport = new StdioClientTransport({ command, args, env, stderr: 'inherit' });
const client = new Client({ name: 'mcp-token-broker-ts-test-client', version: '0.0.0' });
try {
  await client.connect(transport);
} catch (err) {
  print(failure(err));
  await transport.close().catch(() => {});
  process.exit(1);
}
print({ ok: true, server: client.getServerVersion() });

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const request = JSON.parse(line);
  try {
    if (request.op === 'list') {
      const { tools } = await client.listTools();
      print({ ok: true, tools: tools.map((t) => t.name) });
    } else if (request.op === 'call') {
      print({ ok: true, result: await client.callTool({ name: request.name, arguments: request.arguments ?? {} }) });
    } else {
      print({ ok: false, error: { code: null, message: `unknown op ${request.op}` } });
    }
  } catch (err) {
    print(failure(err));
  }
}
await client.close();
