# Pair scores carry the particles (training annotators' weight vectors) that information gain ranges over.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('modeling', '0005_h5_training_enqueue'),
    ]

    operations = [
        migrations.AddField(
            model_name='pairscores',
            name='particles',
            field=models.JSONField(blank=True, default=list, help_text='[M][k] mixture weights.'),
        ),
        migrations.AddField(
            model_name='pairscores',
            name='particle_prior',
            field=models.JSONField(blank=True, default=list, help_text='M prior probabilities.'),
        ),
        migrations.AddField(
            model_name='pairscores',
            name='particle_probs',
            field=models.BinaryField(blank=True, default=b'', help_text='float32 little-endian, [n_pairs, M]'),
        ),
        migrations.AddField(
            model_name='pairscores',
            name='tie_nu',
            field=models.FloatField(blank=True, help_text="Davidson's tie parameter ν (None: no ties).", null=True),
        ),
    ]
