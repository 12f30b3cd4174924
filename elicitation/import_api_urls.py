"""Import endpoints, under /api/v1/."""

from django.urls import path

from elicitation.import_apis import ComparisonsImportApi, ResponsesImportApi

urlpatterns = [
    path("studies/<slug:slug>/import/responses", ResponsesImportApi.as_view(), name="api-import-responses"),
    path("studies/<slug:slug>/import/comparisons", ComparisonsImportApi.as_view(), name="api-import-comparisons"),
]
