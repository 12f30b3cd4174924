# Export jobs record when the broker took their task, so a job created while it was down is sent again.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('annotation', '0004_h5_export_attempts'),
    ]

    operations = [
        migrations.AddField(
            model_name='exportjob',
            name='enqueue_tried_at',
            field=models.DateTimeField(blank=True, help_text='The last attempt to send it.', null=True),
        ),
        migrations.AddField(
            model_name='exportjob',
            name='enqueued_at',
            field=models.DateTimeField(blank=True, help_text='When the broker took the task.', null=True),
        ),
    ]
