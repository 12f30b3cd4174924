from django.contrib import admin

from annotation.models import ConsentRefusal, ExportJob, Judgment, Participant, Withdrawal


@admin.register(Participant)
class ParticipantAdmin(admin.ModelAdmin):
    list_display = ["external_id", "study", "source", "judgment_count", "completed_at"]
    list_filter = ["study", "source"]
    search_fields = ["external_id"]


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = ["id", "study", "participant", "choice", "is_attention_check", "answered_at"]
    list_filter = ["study", "choice", "is_attention_check", "origin"]
    raw_id_fields = ["participant", "pair", "served_pair", "response_a", "response_b"]


admin.site.register(ConsentRefusal)
admin.site.register(Withdrawal)
admin.site.register(ExportJob)
