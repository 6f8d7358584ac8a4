// docs.js — renders openapi.yaml (served by natter-api) with the vendored Redoc
// bundle (vendor/redoc). Nothing is fetched from anywhere else.
/* global Redoc */
Redoc.init(
  "openapi.yaml",
  { hideDownloadButton: false, expandResponses: "200,201", disableSearch: false, hideHostname: false },
  document.getElementById("redoc"),
);
