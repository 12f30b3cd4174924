from django.contrib import admin

from elicitation.models import Pair, Prompt, Response, Study, StudyCollaborator, SurveyQuestion


class SurveyQuestionInline(admin.TabularInline):
    model = SurveyQuestion
    extra = 0


class CollaboratorInline(admin.TabularInline):
    model = StudyCollaborator
    extra = 0


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ["title", "slug", "owner", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["title", "slug"]
    prepopulated_fields = {"slug": ["title"]}
    inlines = [SurveyQuestionInline, CollaboratorInline]


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "study", "__str__"]
    list_filter = ["study"]
    search_fields = ["text"]


@admin.register(Response)
class ResponseAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt", "__str__", "source"]
    search_fields = ["text"]
    raw_id_fields = ["prompt"]


@admin.register(Pair)
class PairAdmin(admin.ModelAdmin):
    list_display = ["id", "study", "prompt", "is_attention_check", "judgment_count"]
    list_filter = ["study", "is_attention_check"]
    raw_id_fields = ["prompt", "response_a", "response_b", "correct_response"]
