"""Studies API, under /api/v1/ (no trailing slashes)."""

from django.urls import path

from elicitation.apis import (
    CollaboratorAddApi,
    CollaboratorRemoveApi,
    PromptListApi,
    StudyDetailApi,
    StudyListCreateApi,
)

urlpatterns = [
    path("studies", StudyListCreateApi.as_view(), name="api-study-list"),
    path("studies/<slug:slug>", StudyDetailApi.as_view(), name="api-study-detail"),
    path("studies/<slug:slug>/prompts", PromptListApi.as_view(), name="api-study-prompts"),
    path("studies/<slug:slug>/collaborators", CollaboratorAddApi.as_view(), name="api-study-collaborators"),
    path(
        "studies/<slug:slug>/collaborators/<str:username>",
        CollaboratorRemoveApi.as_view(),
        name="api-study-collaborator",
    ),
]
