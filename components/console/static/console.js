// spin-wxpay merchant console: a single page over the admin API (same origin). Vanilla JS, no
// dependency. The admin token lives in sessionStorage only (never a URL, a cookie or a log);
// every amount is shown and typed in yuan and sent as integer fen, converted with exact string
// arithmetic. The DOM is built with textContent only: nothing the API returns is parsed as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "wxpay-admin-token";
  const PAGE_SIZE = 20;
  const $ = (id) => document.getElementById(id);

  // ---- Amounts: yuan text <-> integer fen, no floating point ---------------------------------

  // "12.34" -> 1234, "12" -> 1200, "0.5" -> 50; null for anything else ("1.234", "-1", "abc",
  // "", "01", "1e3") and for zero. At most 9 digits of yuan: far below 2^53, so exact.
  function parseYuan(text) {
    const m = /^(0|[1-9][0-9]{0,8})(?:\.([0-9]{1,2}))?$/.exec(String(text).trim());
    if (!m) return null;
    const fen = Number(m[1]) * 100 + Number((m[2] || "").padEnd(2, "0"));
    return fen > 0 ? fen : null;
  }
  const AMOUNT_RULE = "an amount in yuan with at most two decimals, at least 0.01 (e.g. 12.34)";

  // 1234 -> "12.34"
  function yuan(fen) {
    if (!Number.isSafeInteger(fen) || fen < 0) return String(fen);
    return Math.floor(fen / 100) + "." + String(fen % 100).padStart(2, "0");
  }

  // ---- DOM helpers ------------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const status = (s) => el("span", { class: "status status-" + s, text: s });
  const show = (node) => $("main").replaceChildren(...[node].flat());

  function showError(err) {
    const box = $("error");
    box.replaceChildren(
      el("strong", { class: "error-code", text: err.code || "error" }),
      ": ",
      el("span", { class: "error-message", text: err.message || String(err) })
    );
    box.hidden = false;
  }
  function showNotice(text) {
    $("notice").textContent = text;
    $("notice").hidden = false;
  }
  function clearMessages() {
    $("error").hidden = true;
    $("notice").hidden = true;
  }

  // ---- The API ----------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(code, message, httpStatus) {
      super(message);
      this.code = code;
      this.httpStatus = httpStatus;
    }
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  async function api(method, path, body, bearer) {
    const headers = { authorization: "Bearer " + (bearer || token() || "") };
    const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError("network_error", "the app could not be reached: " + (e.message || e), 0);
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = null;
    }
    if (!res.ok) {
      const e = data && data.error;
      throw new ApiError(
        (e && e.code) || "http_" + res.status,
        (e && e.message) || text.slice(0, 200) || res.statusText,
        res.status
      );
    }
    return data;
  }

  // Runs an action, showing its error (a 401 also signs out: the token is wrong or was changed).
  async function guarded(action) {
    try {
      return await action();
    } catch (err) {
      if (err.httpStatus === 401 && token()) {
        sessionStorage.removeItem(TOKEN_KEY);
        renderLogin();
      }
      showError(err);
      return undefined;
    }
  }

  async function loadMode() {
    try {
      const res = await fetch("/api/health", { cache: "no-store", credentials: "omit" });
      const health = await res.json();
      $("sim-banner").hidden = health.mode !== "simulator";
    } catch (e) {
      // The banner is only ever shown on the app's word; the admin calls report their own errors.
    }
  }

  // ---- Screens ------------------------------------------------------------------------------------

  function renderLogin() {
    $("nav").hidden = true;
    const input = el("input", { type: "password", id: "token", autocomplete: "off", size: 40, "aria-label": "Admin token" });
    const form = el(
      "form",
      { class: "inline", id: "login-form" },
      el("label", {}, "Admin token", input),
      el("button", { type: "submit", id: "sign-in" }, "Sign in")
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearMessages();
      const candidate = input.value.trim();
      if (!candidate) {
        showError({ code: "missing_token", message: "type the admin token" });
        return;
      }
      try {
        await api("GET", "/api/admin/products", undefined, candidate);
      } catch (err) {
        showError(err);
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, candidate);
      input.value = "";
      if (!location.hash || location.hash === "#/" || location.hash === "#/login") location.hash = "#/orders";
      else route();
    });
    show(
      el(
        "section",
        { class: "card", id: "login" },
        el("h2", { text: "Sign in" }),
        el("p", { class: "muted", text: "The admin token (in simulator mode: simulator-admin-token). It is kept in this tab's session storage only." }),
        form
      )
    );
    input.focus();
  }

  // Orders: search by number, and the most recent orders, a page at a time.
  const pages = { cursors: [null] }; // the `before` of each page shown so far

  async function renderOrders(page) {
    const search = el("input", { type: "text", id: "search-order", placeholder: "Order number", size: 36, "aria-label": "Order number" });
    const searchForm = el("form", { class: "inline", id: "search-form" }, search, el("button", { type: "submit", id: "search-button" }, "Open"));
    searchForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const no = search.value.trim();
      if (!/^[0-9A-Za-z_\-|*@]{1,32}$/.test(no)) {
        showError({ code: "invalid_order_no", message: "an order number is 1-32 letters, digits or _-|*@" });
        return;
      }
      location.hash = "#/order/" + encodeURIComponent(no);
    });
    const before = pages.cursors[page] || null;
    const query = "?limit=" + PAGE_SIZE + (before ? "&before=" + encodeURIComponent(before) : "");
    const list = await guarded(() => api("GET", "/api/admin/orders" + query));
    if (!token()) return; // a 401 signed out: the sign-in screen stays
    const body = el("tbody", {});
    const table = el(
      "table",
      { id: "orders" },
      el("thead", {}, el("tr", {}, el("th", { text: "Order" }), el("th", { text: "Status" }), el("th", { class: "amount", text: "Amount (¥)" }),
        el("th", { class: "amount", text: "Refunded (¥)" }), el("th", { text: "Created" }), el("th", { text: "Paid" }))),
      body
    );
    const orders = (list && list.orders) || [];
    for (const o of orders) {
      body.append(
        el("tr", { "data-order": o.order_no },
          el("td", {}, el("a", { href: "#/order/" + encodeURIComponent(o.order_no), class: "mono", text: o.order_no })),
          el("td", {}, status(o.status)),
          el("td", { class: "amount", text: yuan(o.total_fee) }),
          el("td", { class: "amount", text: o.refunded_total ? yuan(o.refunded_total) : "" }),
          el("td", { text: o.created_at || "" }),
          el("td", { text: o.paid_at || "" }))
      );
    }
    if (list && orders.length === 0) body.append(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "No orders." })));
    const pager = el("div", { class: "pager" });
    if (page > 0) pager.append(el("button", { type: "button", class: "secondary", id: "newer", onclick: () => renderOrders(page - 1) }, "← Newer"));
    if (list && list.next) {
      pager.append(el("button", { type: "button", class: "secondary", id: "older", onclick: () => {
        pages.cursors[page + 1] = list.next;
        renderOrders(page + 1);
      } }, "Older →"));
    }
    show([
      el("section", { class: "card" }, el("h2", { text: "Find an order" }), searchForm),
      el("section", { class: "card", id: "recent" }, el("h2", { text: "Recent orders" + (page > 0 ? " (page " + (page + 1) + ")" : "") }), table, pager),
    ]);
  }

  // Money a new refund may still take: the paid total less every refund not CLOSED (PROCESSING
  // holds its amount until it ends), as the API's `refund_exceeds_paid` rule counts.
  function refundable(order) {
    if (order.status !== "PAID") return 0;
    const held = (order.refunds || []).filter((r) => r.status !== "CLOSED").reduce((sum, r) => sum + r.amount, 0);
    return Math.max(0, order.total_fee - held);
  }

  async function renderOrder(no) {
    const order = await guarded(() => api("GET", "/api/admin/orders/" + encodeURIComponent(no)));
    if (!token()) return;
    if (!order) {
      show(el("section", { class: "card" }, el("p", {}, el("a", { href: "#/orders", text: "← Orders" }))));
      return;
    }
    const field = (name, value, id) => [el("dt", { text: name }), el("dd", { id }, value === undefined || value === null || value === "" ? "—" : value)];
    const fields = el("dl", { class: "fields" },
      field("Order number", el("span", { class: "mono", text: order.order_no }), "order-no"),
      field("Status", status(order.status), "order-status"),
      field("Amount", "¥" + yuan(order.total_fee), "order-total"),
      field("Refunded", order.refunded_total ? "¥" + yuan(order.refunded_total) : "", "order-refunded"),
      field("Product", order.sku + " × " + order.quantity + (order.description ? " — " + order.description : ""), "order-product"),
      field("WeChat transaction id", order.transaction_id ? el("span", { class: "mono", text: order.transaction_id }) : "", "order-transaction"),
      field("Created", order.created_at, "order-created"),
      field("Paid", order.paid_at, "order-paid"),
      field("Mode", order.mode, "order-mode"));

    const refundRows = (order.refunds || []).map((r) =>
      el("tr", { "data-refund": r.refund_no },
        el("td", { class: "mono", text: r.refund_no }),
        el("td", { class: "amount", text: yuan(r.amount) }),
        el("td", {}, status(r.status)),
        el("td", { class: "mono", text: r.refund_id || "" }),
        el("td", { text: r.reason || "" }),
        el("td", { text: r.requested_at || "" }),
        el("td", { text: r.settled_at || "" })));
    const refunds = refundRows.length
      ? el("table", { id: "refunds" },
          el("thead", {}, el("tr", {}, ["Refund", "Amount (¥)", "Status", "WeChat refund id", "Reason", "Requested", "Settled"].map((h) => el("th", { text: h })))),
          el("tbody", {}, refundRows))
      : el("p", { class: "muted", id: "refunds", text: "No refunds." });

    const events = el("table", { id: "events" },
      el("thead", {}, el("tr", {}, el("th", { text: "At" }), el("th", { text: "Event" }), el("th", { text: "Details" }))),
      el("tbody", {}, (order.events || []).map((e) => {
        const { at, type, ...rest } = e;
        const details = type === "status" ? (rest.from || "—") + " → " + rest.to : JSON.stringify(rest);
        return el("tr", {}, el("td", { text: at || "" }), el("td", { text: type || "" }), el("td", { class: "mono", text: details }));
      })));

    const left = refundable(order);
    let refundSection;
    if (left > 0) {
      const amount = el("input", { type: "text", id: "refund-amount", class: "amount-input", value: yuan(left), inputmode: "decimal", "aria-label": "Refund amount in yuan" });
      const reason = el("input", { type: "text", id: "refund-reason", maxlength: 80, size: 30, placeholder: "Reason (optional)", "aria-label": "Reason" });
      const form = el("form", { class: "inline", id: "refund-form" },
        el("label", {}, "Amount ¥", amount), reason, el("button", { type: "submit", class: "danger", id: "refund-button" }, "Refund"));
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        clearMessages();
        const fen = parseYuan(amount.value);
        if (fen === null) {
          showError({ code: "invalid_amount", message: "“" + amount.value + "” is not " + AMOUNT_RULE + "; nothing was sent" });
          return;
        }
        if (fen > left) {
          showError({ code: "refund_exceeds_paid", message: "¥" + yuan(fen) + " is more than the ¥" + yuan(left) + " left to refund; nothing was sent" });
          return;
        }
        const text = reason.value.trim();
        if (!window.confirm("Refund ¥" + yuan(fen) + " of order " + order.order_no + " to the customer? WeChat Pay sends the money back; this cannot be undone.")) return;
        const body = { amount: fen };
        if (text) body.reason = text;
        const refund = await guarded(() => api("POST", "/api/admin/orders/" + encodeURIComponent(order.order_no) + "/refunds", body));
        if (refund) {
          await renderOrder(order.order_no);
          showNotice("Refund " + refund.refund_no + " of ¥" + yuan(refund.amount) + ": " + refund.status);
        }
      });
      refundSection = el("section", { class: "card", id: "refund" },
        el("h3", { text: "Refund" }),
        form,
        el("ul", { class: "rules" },
          el("li", { text: "At most ¥" + yuan(left) + " is left: the paid ¥" + yuan(order.total_fee) + " less every refund not CLOSED (one PROCESSING holds its amount until it ends)." }),
          el("li", { text: "Amounts in yuan with at most two decimals, at least ¥0.01." }),
          el("li", { text: "One refund of an order a minute, at most 50, within a year of payment." }),
          el("li", { text: "WeChat shows the reason (up to 80 characters) to the customer." })));
    } else {
      refundSection = el("section", { class: "card", id: "refund" }, el("h3", { text: "Refund" }),
        el("p", { class: "muted", id: "no-refund", text: order.status === "PAID" ? "Nothing is left to refund (refunds still PROCESSING hold their amount)." : "Only a PAID order can be refunded (this one is " + order.status + ")." }));
    }

    show([
      el("p", {}, el("a", { href: "#/orders", text: "← Orders" }), " ",
        el("button", { type: "button", class: "secondary", id: "reload", onclick: () => { clearMessages(); renderOrder(order.order_no); } }, "Reload")),
      el("section", { class: "card", id: "order" }, el("h2", { text: "Order " + order.order_no }), fields),
      refundSection,
      el("section", { class: "card" }, el("h3", { text: "Refunds" }), refunds),
      el("section", { class: "card" }, el("h3", { text: "Events" }), events),
    ]);
  }

  async function renderCatalog() {
    const data = await guarded(() => api("GET", "/api/admin/products"));
    if (!token()) return;
    const products = (data && data.products) || [];
    const put = async (p, changes, done) => {
      clearMessages();
      const saved = await guarded(() => api("PUT", "/api/admin/products/" + encodeURIComponent(p.sku), { name: p.name, price: p.price, active: p.active, ...changes }));
      if (saved) {
        await renderCatalog();
        showNotice(done(saved));
      }
    };
    const rows = products.map((p) => {
      const price = el("input", { type: "text", class: "amount-input price-input", value: yuan(p.price), inputmode: "decimal", "aria-label": "Price of " + p.sku });
      const save = el("button", { type: "button", class: "secondary save-price" }, "Save price");
      save.addEventListener("click", () => {
        const fen = parseYuan(price.value);
        if (fen === null) {
          clearMessages();
          showError({ code: "invalid_price", message: "“" + price.value + "” is not " + AMOUNT_RULE + "; nothing was sent" });
          return;
        }
        put(p, { price: fen }, (s) => s.sku + " now costs ¥" + yuan(s.price));
      });
      const toggle = p.active
        ? el("button", { type: "button", class: "danger deactivate", onclick: () => put(p, { active: false }, (s) => s.sku + " deactivated: no new order can buy it") }, "Deactivate")
        : el("button", { type: "button", class: "secondary activate", onclick: () => put(p, { active: true }, (s) => s.sku + " active again") }, "Activate");
      return el("tr", { "data-sku": p.sku },
        el("td", { class: "mono", text: p.sku }),
        el("td", { text: p.name }),
        el("td", { class: "amount price", text: yuan(p.price) }),
        el("td", { class: "active", text: p.active ? "yes" : "no" }),
        el("td", {}, el("div", { class: "inline" }, price, " ", save, " ", toggle)));
    });
    const table = el("table", { id: "products" },
      el("thead", {}, el("tr", {}, el("th", { text: "SKU" }), el("th", { text: "Name" }), el("th", { class: "amount", text: "Price (¥)" }), el("th", { text: "Active" }), el("th", { text: "Change" }))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 5, class: "muted", text: "No products yet." }))));

    const sku = el("input", { type: "text", id: "new-sku", size: 14, placeholder: "sku", "aria-label": "SKU" });
    const name = el("input", { type: "text", id: "new-name", size: 24, placeholder: "Name", "aria-label": "Name" });
    const price = el("input", { type: "text", id: "new-price", class: "amount-input", placeholder: "0.00", inputmode: "decimal", "aria-label": "Price in yuan" });
    const add = el("form", { class: "inline", id: "add-product" }, sku, name, el("label", {}, "¥", price), el("button", { type: "submit", id: "add-button" }, "Save product"));
    add.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearMessages();
      const fen = parseYuan(price.value);
      if (fen === null) {
        showError({ code: "invalid_price", message: "“" + price.value + "” is not " + AMOUNT_RULE + "; nothing was sent" });
        return;
      }
      await put({ sku: sku.value.trim(), name: name.value.trim(), active: true }, { price: fen }, (s) => s.sku + " saved at ¥" + yuan(s.price));
    });
    show([
      el("section", { class: "card" }, el("h2", { text: "Catalog" }), table),
      el("section", { class: "card" }, el("h3", { text: "Add or replace a product" }), add,
        el("p", { class: "muted", text: "Saving an existing SKU replaces its name and price. Orders already made keep their price." })),
    ]);
  }

  function renderReconcile() {
    const result = el("div", { id: "reconcile-result" });
    const run = el("button", { type: "button", id: "run-reconcile" }, "Run reconcile");
    run.addEventListener("click", async () => {
      clearMessages();
      run.disabled = true;
      const counts = await guarded(() => api("POST", "/api/admin/reconcile"));
      run.disabled = false;
      if (!counts) return;
      const labels = [
        ["checked", "Open orders checked"], ["paid", "Payments recorded"], ["closed", "Expired orders closed"],
        ["failed", "Orders failed"], ["refunds_checked", "Refunds checked"], ["refunds_settled", "Refunds settled"],
      ];
      const list = el("dl", { class: "fields", id: "reconcile-counts" });
      for (const [key, label] of labels) list.append(el("dt", { text: label }), el("dd", { "data-count": key, text: String(counts[key] ?? "—") }));
      list.append(el("dt", { text: "Complete" }), el("dd", { "data-count": "complete", text: counts.complete ? "yes" : "no — run it again to go on" }));
      const errors = (counts.errors || []).map((e) => el("li", { class: "mono", text: typeof e === "string" ? e : JSON.stringify(e) }));
      result.replaceChildren(list, errors.length ? el("ul", { id: "reconcile-errors" }, errors) : el("p", { class: "muted", text: "No errors." }));
    });
    show(el("section", { class: "card" }, el("h2", { text: "Reconcile" }),
      el("p", { class: "muted", text: "Asks WeChat Pay about every open order and every refund not finished, records what a lost notification would have said, and closes expired orders." }),
      run, result));
  }

  // ---- Routing: #/orders, #/order/NO, #/catalog, #/reconcile -------------------------------------

  function route() {
    clearMessages();
    if (!token()) {
      renderLogin();
      return;
    }
    $("nav").hidden = false;
    const hash = location.hash || "#/orders";
    for (const link of document.querySelectorAll("nav a")) link.classList.toggle("current", hash.startsWith(link.getAttribute("href")));
    const order = /^#\/order\/(.+)$/.exec(hash);
    if (order) renderOrder(decodeURIComponent(order[1]));
    else if (hash === "#/catalog") renderCatalog();
    else if (hash === "#/reconcile") renderReconcile();
    else {
      pages.cursors = [null];
      renderOrders(0);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-out").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      location.hash = "#/";
      route();
    });
    window.addEventListener("hashchange", route);
    loadMode();
    route();
  });

  // For the browser tests: the amount rules, callable without a request.
  window.wxpayConsole = { parseYuan, yuan };
})();
