// The whole payment flow of spin-wxpay from the client's side:
// wx.login → POST /api/login → POST /api/orders → wx.requestPayment (or POST /_sim/pay in
// simulator mode) → poll GET /api/orders/{order_no} until PAID or timeout.
const { BASE_URL, SIMULATOR } = getApp().globalData;

const POLL_INTERVAL_MS = 1500;
const POLL_TIMEOUT_MS = 30000;

// wx.request as a promise; rejects on a network error or a non-2xx status.
function request(method, path, data, token) {
  return new Promise((resolve, reject) => {
    wx.request({
      url: BASE_URL + path,
      method,
      data,
      header: Object.assign(
        { 'content-type': 'application/json' },
        token ? { authorization: 'Bearer ' + token } : {}
      ),
      success(res) {
        if (res.statusCode >= 200 && res.statusCode < 300) {
          resolve(res.data);
        } else {
          const error = (res.data && res.data.error) || {};
          reject(new Error((error.code || res.statusCode) + ': ' + (error.message || '')));
        }
      },
      fail(err) {
        reject(new Error(err.errMsg));
      },
    });
  });
}

function wxLogin() {
  return new Promise((resolve, reject) => {
    wx.login({
      success: (res) => (res.code ? resolve(res.code) : reject(new Error('wx.login gave no code'))),
      fail: (err) => reject(new Error(err.errMsg)),
    });
  });
}

// The parameters come from the server exactly as wx.requestPayment wants them.
function requestPayment(payParams) {
  return new Promise((resolve, reject) => {
    wx.requestPayment(
      Object.assign({}, payParams, {
        success: resolve,
        fail: (err) => reject(new Error(err.errMsg)), // includes "requestPayment:fail cancel"
      })
    );
  });
}

// Simulator mode: the simulator plays the paying user and WeChat's notification.
function simulatePayment(payParams) {
  return request('POST', '/_sim/pay', { package: payParams.package, result: 'SUCCESS' });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// wx.requestPayment's success is not proof of payment: the server's order status is.
async function waitUntilPaid(orderNo, token) {
  const deadline = Date.now() + POLL_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const order = await request('GET', '/api/orders/' + orderNo, undefined, token);
    if (order.status === 'PAID') return order;
    if (order.status === 'CLOSED' || order.status === 'FAILED') {
      throw new Error('order ' + order.status);
    }
    await sleep(POLL_INTERVAL_MS);
  }
  throw new Error('not paid yet; check again later');
}

Page({
  data: { busy: false, status: '', orderNo: '' },

  async buy() {
    this.setData({ busy: true, status: 'Logging in…', orderNo: '' });
    try {
      const code = await wxLogin();
      const { token } = await request('POST', '/api/login', { code });

      this.setData({ status: 'Creating the order…' });
      const created = await request('POST', '/api/orders', { sku: 'demo', quantity: 1 }, token);
      this.setData({ orderNo: created.order.order_no, status: 'Paying…' });

      if (SIMULATOR) {
        await simulatePayment(created.pay_params);
      } else {
        await requestPayment(created.pay_params);
      }

      this.setData({ status: 'Waiting for confirmation…' });
      await waitUntilPaid(created.order.order_no, token);
      this.setData({ status: 'Paid ✔' });
    } catch (e) {
      this.setData({ status: 'Failed: ' + e.message });
    } finally {
      this.setData({ busy: false });
    }
  },
});
