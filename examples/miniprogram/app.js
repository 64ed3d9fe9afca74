// spin-wxpay example mini program. See README.md in this folder.
//
// BASE_URL: where `spin up` (or your Spin host) serves the app. A real device needs an https
// origin listed in the mini program's request domain whitelist; the developer tools can call
// http://127.0.0.1:3000 with "do not verify request domains" switched on.
// SIMULATOR: true while the app runs with wxpay_mode = simulator. Then wx.requestPayment cannot
// succeed (its prepay id is not WeChat's), so the page pays through POST /_sim/pay instead.
App({
  globalData: {
    BASE_URL: 'http://127.0.0.1:3000',
    SIMULATOR: true,
  },
});
