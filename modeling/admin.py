"""Admin views of what the reward models learned. Runs are read-only here: they change through services."""

from django.contrib import admin

from modeling.models import ParticipantWeights, StudyModel, TextEmbedding, TrainingRun


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "study", "kind", "status", "groups_chosen", "data_count", "device", "duration_s", "created_at"]
    list_filter = ["status", "kind", "device"]
    search_fields = ["study__slug", "study__title"]
    readonly_fields = [f.name for f in TrainingRun._meta.fields]

    def has_add_permission(self, request: object) -> bool:
        return False  # a run row without its task would never start: request runs from the study page


@admin.register(StudyModel)
class StudyModelAdmin(admin.ModelAdmin):
    list_display = ["study", "current_run", "judgments_at_last_request", "retrain_every", "updated_at"]
    raw_id_fields = ["study", "current_run"]
    readonly_fields = ["judgments_at_last_request", "updated_at"]


@admin.register(ParticipantWeights)
class ParticipantWeightsAdmin(admin.ModelAdmin):
    list_display = ["participant", "run", "group", "n_judgments"]
    raw_id_fields = ["run", "participant"]


@admin.register(TextEmbedding)
class TextEmbeddingAdmin(admin.ModelAdmin):
    list_display = ["text_hash", "model_name", "dim", "created_at"]
    list_filter = ["model_name"]
    exclude = ["vector"]
