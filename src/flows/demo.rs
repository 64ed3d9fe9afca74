//! The demo catalog of simulator mode: `spin up --build` followed by the README's quickstart
//! must find something to buy without an admin step.
//!
//! When an order asks for a demo sku (or the admin lists the catalog) in simulator mode and the
//! catalog is empty, the demo products are written to it, as ordinary `product:{sku}` records
//! that the admin routes can then change or delete. A catalog that holds anything is never
//! touched, and live mode never seeds.

use super::{ApiError, Store, store_unavailable};
use crate::config::Mode;
use crate::money::Fen;
use crate::order::{PRODUCT_KEY_PREFIX, Product, product_key};

/// The sku of the quickstart: 1 fen.
pub const DEMO_SKU: &str = "demo";

/// The demo catalog.
pub fn demo_products() -> Vec<Product> {
    vec![
        Product {
            sku: DEMO_SKU.into(),
            name: "Demo item (simulated payment)".into(),
            price: Fen(1),
            active: true,
        },
        Product {
            sku: "demo-tea".into(),
            name: "乌龙茶 Oolong tea (demo)".into(),
            price: Fen(1990),
            active: true,
        },
    ]
}

/// Whether `sku` is in the demo catalog.
pub fn is_demo_sku(sku: &str) -> bool {
    demo_products().iter().any(|p| p.sku == sku)
}

/// Writes the demo catalog if `mode` is simulator and the catalog is empty. Returns the
/// products written (empty when nothing was seeded).
pub(crate) async fn seed_if_empty<S: Store>(
    store: &S,
    mode: Mode,
) -> Result<Vec<Product>, ApiError> {
    if mode != Mode::Simulator {
        return Ok(Vec::new());
    }
    let keys = store
        .keys_with_prefix(PRODUCT_KEY_PREFIX)
        .await
        .map_err(|e| store_unavailable(&e))?;
    if !keys.is_empty() {
        return Ok(Vec::new());
    }
    let products = demo_products();
    for product in &products {
        let bytes = serde_json::to_vec(product)
            .map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
        store
            .set(&product_key(&product.sku), &bytes)
            .await
            .map_err(|e| store_unavailable(&e))?;
    }
    Ok(products)
}

/// The product for an order's `sku` that is not in the catalog: in simulator mode, a demo sku
/// seeds the (empty) demo catalog and is found there.
pub(crate) async fn missing_product<S: Store>(
    store: &S,
    mode: Mode,
    sku: &str,
) -> Result<Option<Product>, ApiError> {
    if mode != Mode::Simulator || !is_demo_sku(sku) {
        return Ok(None);
    }
    Ok(seed_if_empty(store, mode)
        .await?
        .into_iter()
        .find(|p| p.sku == sku))
}
