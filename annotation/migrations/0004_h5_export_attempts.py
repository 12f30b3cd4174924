# Export jobs count their attempts, so a redelivered task can take over a dead worker's job.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('annotation', '0003_h9_exclusions'),
    ]

    operations = [
        migrations.AddField(
            model_name='exportjob',
            name='attempts',
            field=models.PositiveSmallIntegerField(default=0),
        ),
    ]
