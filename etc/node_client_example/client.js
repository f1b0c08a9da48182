#!/usr/bin/env node
/*
 * Run code on a kernel through a kernel gateway, from Node, with @jupyterlab/services.
 *
 * Lists the kernelspecs, starts a kernel of the default one through a KernelManager, runs
 * print("Hello world!") over the kernel's channels websocket, prints the type of every iopub
 * message and the text of every stream message, then shuts the kernel down.
 *
 *     GATEWAY_HOST=127.0.0.1:8888 [KG_AUTH_TOKEN=...] [KGW_PROTOCOL=legacy] node client.js
 *
 * Exits 0 on success; on any error, or after TIMEOUT_MS, prints "error: ..." on stderr, shuts
 * down the kernel if it started one, and exits 1.
 */
'use strict';

const WebSocket = require('ws');
const {
  KernelManager,
  KernelSpecAPI,
  ServerConnection
} = require('@jupyterlab/services');

const TIMEOUT_MS = 60 * 1000;
const CLEANUP_TIMEOUT_MS = 10 * 1000;
const CODE = 'print("Hello world!")';

/*
 * @jupyterlab/services offers the v1.kernel.websocket.jupyter.org subprotocol on every
 * connection and speaks whatever the server accepts: v1 when it accepts the subprotocol, the
 * legacy JSON frames when it accepts none. So the protocol is chosen here, in the WebSocket
 * class handed to it: with 'legacy' the class offers no subprotocol at all, the server can
 * accept none, and the connection speaks the legacy protocol. Either way the class records the
 * subprotocol the server accepted ('' for none) when the connection opens.
 */
const accepted = [];

function webSocketFor(protocol) {
  if (protocol !== 'v1' && protocol !== 'legacy') {
    throw new Error(`KGW_PROTOCOL must be v1 or legacy, not ${JSON.stringify(protocol)}`);
  }
  return class ChannelsWebSocket extends WebSocket {
    constructor(url, protocols, options) {
      super(url, protocol === 'legacy' ? [] : protocols, options);
      this.addEventListener('open', () => accepted.push(this.protocol));
    }
  };
}

function settingsFor(host, token, protocol) {
  return ServerConnection.makeSettings({
    baseUrl: `http://${host}/`,
    wsUrl: `ws://${host}/`,
    token,
    // Node's own ServerConnection has no page to read a token from: send the token in the
    // websocket URL, since the ws handshake carries no Authorization header here.
    appendToken: true,
    WebSocket: webSocketFor(protocol),
    fetch: globalThis.fetch,
    Headers: globalThis.Headers,
    Request: globalThis.Request
  });
}

async function run(state) {
  const host = process.env.GATEWAY_HOST || '127.0.0.1:8888';
  const token = process.env.KG_AUTH_TOKEN || '';
  const protocol = (process.env.KGW_PROTOCOL || 'v1').toLowerCase();
  const serverSettings = settingsFor(host, token, protocol);

  const specs = await KernelSpecAPI.getSpecs(serverSettings);
  const names = Object.keys(specs.kernelspecs).join(',');
  console.log(`Kernelspecs: default=${specs.default} available=${names}`);
  for (const spec of Object.values(specs.kernelspecs)) {
    console.log(`  ${spec.name}: ${spec.display_name} (${spec.language})`);
  }

  // The gateway need not allow listing its kernels (KG_LIST_KERNELS): keep the manager from
  // polling the list, which it does only to notice kernels that others start or stop.
  state.manager = new KernelManager({ serverSettings, standby: 'never' });
  state.kernel = await state.manager.startNew({ name: specs.default });
  const kernel = state.kernel;
  console.log(`Started kernel ${kernel.id} (${kernel.name}), protocol ${protocol}`);

  const future = kernel.requestExecute({ code: CODE });
  future.onIOPub = msg => {
    console.log(`Received message type: ${msg.header.msg_type}`);
    if (msg.header.msg_type === 'stream') {
      process.stdout.write(msg.content.text);
    }
  };
  const reply = await future.done;
  if (reply.content.status !== 'ok') {
    throw new Error(`execution ended with status ${reply.content.status}`);
  }
  const wire = accepted.length ? accepted[accepted.length - 1] || 'legacy' : 'none';
  console.log(`Wire protocol: ${wire}`);

  await kernel.shutdown();
  state.kernel = null;
  console.log(`Shut down kernel ${kernel.id}`);
}

async function cleanUp(state) {
  if (state.kernel) {
    try {
      await withTimeout(state.kernel.shutdown(), CLEANUP_TIMEOUT_MS, 'shutting the kernel down');
    } catch (e) {
      console.error(`error: could not shut down kernel ${state.kernel.id}: ${e.message}`);
    }
  }
  if (state.manager) {
    state.manager.dispose();
  }
}

/* The promise, or a rejection after ms milliseconds saying what did not finish. */
function withTimeout(promise, ms, what) {
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

async function main() {
  const state = { manager: null, kernel: null };
  let code = 0;
  try {
    await withTimeout(run(state), TIMEOUT_MS, 'the client');
  } catch (e) {
    console.error(`error: ${e.message || e}`);
    code = 1;
  }
  await cleanUp(state);
  // The manager's polls and the kernel connection's timers would keep Node running: end here.
  process.exit(code);
}

main();
