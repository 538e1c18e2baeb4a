// The live saga page: my recent orders, and each one's saga as it happens.
//
// Orders come from GET orders (polled); the saga from GET orders/{id}/events, the edge's Server-Sent
// Events, read with fetch because EventSource cannot send the bearer token. Text from the server is
// only ever set as textContent, never parsed as HTML. URLs are relative to the page, so the page also
// works behind a proxy that serves the edge under a prefix.
"use strict";

const TOKEN_KEY = "emporium.token";
const ENDED = new Set(["delivered", "cancelled"]);
const POLL_MS = 2000;
// Each stream holds a connection and a browser opens about six per host: leave room for the rest.
const MAX_FOLLOWED = 4;
const followed = new Map(); // order id -> AbortController of its stream
let links = { rabbitmq_ui: null, publishers: {} };
let polling = null;

const byId = (id) => document.getElementById(id);

function showProblem(text) {
  const problem = byId("problem");
  problem.textContent = text;
  problem.hidden = !text;
}

class SignedOut extends Error {}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    signOut();
    throw new SignedOut("signed out: sign in again");
  }
  return response;
}

async function detailOf(response) {
  try {
    return (await response.json()).detail || response.statusText;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function timeElement(at) {
  const time = document.createElement("time");
  const date = new Date(at);
  time.dateTime = date.toISOString();
  time.textContent = date.toLocaleTimeString();
  return time;
}

function orderElement(orderId) {
  const list = byId("orders");
  for (const li of list.children) {
    if (li.dataset.orderId === orderId) return li;
  }
  const li = byId("order").content.firstElementChild.cloneNode(true);
  li.dataset.orderId = orderId;
  li.querySelector(".order-id").textContent = orderId;
  list.append(li);
  return li;
}

function showOrder(order) {
  const li = orderElement(order.order_id);
  li.dataset.status = order.status;
  const reason = order.cancel_reason ? ` (${order.cancel_reason.replaceAll("_", " ")})` : "";
  li.querySelector(".status").textContent = order.status + reason;
  li.querySelector(".total").textContent = `${(order.total_cents / 100).toFixed(2)} ${order.currency}`;
  const steps = li.querySelector(".steps");
  steps.replaceChildren(
    ...order.history.map((step) => {
      const item = document.createElement("li");
      item.dataset.step = step.status;
      item.append(step.status, timeElement(step.at));
      return item;
    }),
  );
  return li;
}

function showEvent(orderId, type, data) {
  const item = document.createElement("li");
  item.dataset.event = type;
  item.append(type, timeElement(Date.now()));
  const publisher = links.publishers[type];
  if (links.rabbitmq_ui && publisher) {
    // Development only: the queue of the actor that published this step, in the RabbitMQ UI.
    const queue = document.createElement("a");
    queue.href = `${links.rabbitmq_ui}/${encodeURIComponent(publisher)}`;
    queue.target = "_blank";
    queue.rel = "noopener noreferrer";
    queue.textContent = `queue ${publisher}`;
    item.append(" · ", queue);
  }
  if (type === "dropped") item.append(` · ${data.detail || "the stream was cut"}: reconnecting`);
  orderElement(orderId).querySelector(".events").append(item);
}

async function refreshOrder(orderId) {
  const response = await api(`orders/${encodeURIComponent(orderId)}`);
  if (response.ok) showOrder(await response.json());
}

function parseEvent(block) {
  const event = { type: "message", data: [] };
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(":")) continue; // a comment: the heartbeat
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event.type = value;
    if (field === "data") event.data.push(value);
  }
  return event.data.length ? { type: event.type, data: JSON.parse(event.data.join("\n")) } : null;
}

async function onSagaEvent(orderId, event) {
  if (event.type === "snapshot") {
    showOrder(event.data);
    return;
  }
  showEvent(orderId, event.type, event.data);
  // Where the order is now is orders' to say: ask it again after each of its own events.
  if (event.type.startsWith("order.")) await refreshOrder(orderId);
}

async function follow(orderId) {
  const controller = new AbortController();
  followed.set(orderId, controller);
  try {
    const response = await api(`orders/${encodeURIComponent(orderId)}/events`, {
      headers: { Accept: "text/event-stream" },
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(`following ${orderId}: ${await detailOf(response)}`);
    orderElement(orderId).dataset.following = "live";
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        const event = parseEvent(block);
        if (event) await onSagaEvent(orderId, event);
      }
    }
    await refreshOrder(orderId);
  } catch (error) {
    if (error.name !== "AbortError" && !(error instanceof SignedOut)) showProblem(String(error.message || error));
  } finally {
    followed.delete(orderId);
    delete orderElement(orderId).dataset.following;
  }
}

async function poll() {
  try {
    const response = await api("orders?limit=10");
    if (!response.ok) throw new Error(`listing orders: ${await detailOf(response)}`);
    const page = await response.json();
    byId("no-orders").hidden = page.items.length > 0;
    // Newest first, as orders lists them.
    byId("orders").replaceChildren(...page.items.map(showOrder));
    for (const order of page.items) {
      if (!ENDED.has(order.status) && !followed.has(order.order_id) && followed.size < MAX_FOLLOWED) {
        follow(order.order_id);
      }
    }
    showProblem("");
  } catch (error) {
    if (!(error instanceof SignedOut)) showProblem(String(error.message || error));
  }
}

function signedIn() {
  byId("sign-in").hidden = true;
  byId("signed-in").hidden = false;
  poll();
  polling = setInterval(poll, POLL_MS);
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(polling);
  for (const controller of followed.values()) controller.abort();
  followed.clear();
  byId("orders").replaceChildren();
  byId("signed-in").hidden = true;
  byId("sign-in").hidden = false;
}

async function signIn(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const response = await fetch("auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email: form.get("email"), password: form.get("password") }),
  });
  if (!response.ok) {
    showProblem(`signing in: ${await detailOf(response)}`);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, (await response.json()).access_token);
  showProblem("");
  signedIn();
}

async function start() {
  byId("sign-in").addEventListener("submit", (event) => signIn(event).catch((e) => showProblem(String(e))));
  byId("sign-out").addEventListener("click", signOut);
  try {
    const response = await fetch("saga/links");
    if (response.ok) links = await response.json();
  } catch (error) {
    showProblem(`no links to the queues: ${error}`);
  }
  if (sessionStorage.getItem(TOKEN_KEY)) signedIn();
  else signOut();
}

start();
